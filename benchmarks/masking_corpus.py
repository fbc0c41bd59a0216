"""A generated corpus for the masking benchmark: 50 secret formats in the files and commands they show up
in during development (10 cases each, 500 secrets) and 25 kinds of look-alikes (10 each, 250 files with
no secret). Values are random but well-formed: GitHub and npm tokens carry their CRC32 checksum, JWTs
and Docker auths decode, keys are wrapped as tools write them. Deterministic for a given seed.

A case is one small file; ``values`` are the strings that must not survive masking (for a key block,
each line of key material).
"""

from __future__ import annotations

import base64
import json
import random
import string
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field

AN = string.ascii_letters + string.digits
B64 = AN + "+/"
URL = AN + "_-"
HEX = "0123456789abcdef"
UPPER = string.ascii_uppercase + string.digits
BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase


@dataclass
class Case:
    category: str
    text: str
    values: list[str] = field(default_factory=list)

    @property
    def is_secret(self) -> bool:
        return bool(self.values)


class _Gen:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def s(self, n: int, alphabet: str = AN) -> str:
        return "".join(self.rng.choice(alphabet) for _ in range(n))

    def pick(self, options: list[str]) -> str:
        return self.rng.choice(options)

    def crc_token(self, prefix: str, n: int = 30) -> str:
        body = self.s(n)
        crc, digits = zlib.crc32(body.encode()), ""
        while crc:
            crc, d = divmod(crc, 62)
            digits = BASE62[d] + digits
        return prefix + body + digits.rjust(6, "0")

    def b64url(self, data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    def jwt(self) -> str:
        header = self.b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = {"sub": self.s(12, HEX), "iat": self.rng.randint(1.7e9, 1.8e9), "scope": "read write"}
        return f"{header}.{self.b64url(json.dumps(claims).encode())}.{self.s(43, URL)}"

    def pem(self, kind: str, lines: int) -> tuple[str, list[str]]:
        body = [self.s(64, B64) for _ in range(lines)] + [self.s(self.rng.randint(8, 60), B64) + "=="]
        return f"-----BEGIN {kind}-----\n" + "\n".join(body) + f"\n-----END {kind}-----\n", body

    def password(self) -> str:
        return self.s(6) + self.pick(["/", "@", "#", "!", "%", "+", "&", "$"]) + self.s(8) + self.pick(["", "/", "@"])

    def ts(self) -> str:
        return f"2026-11-{self.rng.randint(10, 28)}T{self.rng.randint(10, 23)}:{self.rng.randint(10, 59)}:07Z"


def _secret_generators() -> dict[str, Callable[[_Gen], Case]]:
    def case(category: str) -> Callable[[Callable[[_Gen], tuple[str, list[str]]]], Callable[[_Gen], Case]]:
        def wrap(fn: Callable[[_Gen], tuple[str, list[str]]]) -> Callable[[_Gen], Case]:
            def make(g: _Gen) -> Case:
                text, values = fn(g)
                return Case(category, text, values)

            gens[category] = make
            return make

        return wrap

    gens: dict[str, Callable[[_Gen], Case]] = {}

    @case("aws-access-key-id")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = g.pick(["AKIA", "ASIA"]) + g.s(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
        return f"[default]\naws_access_key_id = {v}\nregion = eu-west-1\n", [v]

    @case("aws-secret-key")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = g.s(40, B64)
        return f"[prod]\naws_access_key_id = AKIA{g.s(16, UPPER)}\naws_secret_access_key = {v}\n", [v]

    @case("aws-secret-bare")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = g.s(20, B64) + "/" + g.s(19, B64)
        return f"$ aws configure get aws_secret_access_key --profile ci\n{v}\n$ echo ok\nok\n", [v]

    @case("gcp-service-account")
    def _(g: _Gen) -> tuple[str, list[str]]:
        pem, body = g.pem("PRIVATE KEY", 8)
        key_id = g.s(40, HEX)
        doc = {
            "type": "service_account",
            "project_id": f"demo-{g.s(6, HEX)}",
            "private_key_id": key_id,
            "private_key": pem,
            "client_email": "ci@demo.iam.gserviceaccount.com",
            "client_id": g.s(21, "0123456789"),
        }
        return json.dumps(doc, indent=2) + "\n", [*body[:-1], key_id]

    @case("google-api-key")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = "AIza" + g.s(35, URL)
        return f'const firebaseConfig = {{ apiKey: "{v}", projectId: "demo" }};\n', [v]

    @case("google-oauth-secret")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = "GOCSPX-" + g.s(28, URL)
        return json.dumps({"installed": {"client_id": f"{g.s(12, '0123456789')}.apps", "client_secret": v}}), [v]

    @case("azure-ad-client-secret")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = g.s(3) + str(g.rng.randint(0, 9)) + "Q~" + g.s(34, AN + "_~.-")
        return f"AZURE_CLIENT_ID={g.s(8, HEX)}-{g.s(4, HEX)}\nAZURE_CLIENT_SECRET={v}\n", [v]

    @case("azure-storage-key")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = g.s(86, B64) + "=="
        return f"ConnectionString=DefaultEndpointsProtocol=https;AccountName=demo;AccountKey={v};\n", [v]

    @case("github-classic-pat")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = g.crc_token("ghp_")
        return f"$ git clone https://x-access-token:{v}@github.com/org/repo.git\nCloning into 'repo'...\n", [v]

    @case("github-fine-grained-pat")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = "github_pat_11" + g.s(20, UPPER) + "_" + g.s(59)
        return f"export GH_TOKEN={v}\ngh auth status\n", [v]

    @case("github-app-token")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = g.crc_token(g.pick(["ghs_", "ghu_", "gho_"]))
        return f'{{"token": "{v}", "expires_at": "{g.ts()}"}}\n', [v]

    @case("gitlab-token")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = g.pick(["glpat-", "gldt-", "glrt-"]) + g.s(20, URL)
        return f"variables:\n  GITLAB_TOKEN: {v}\n", [v]

    @case("npm-token")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = g.crc_token("npm_")
        return f"registry=https://npm.example.com/\n//npm.example.com/:_authToken={v}\n", [v]

    @case("pypi-token")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = "pypi-AgEIcHlwaS5vcmc" + g.s(g.rng.randint(60, 160), URL)
        return f"[pypi]\n  username = __token__\n  password = {v}\n", [v]

    @case("rubygems-key")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = "rubygems_" + g.s(48, HEX)
        return f"---\n:rubygems_api_key: {v}\n", [v]

    @case("docker-config-auth")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = base64.b64encode(f"deploy:{g.s(24)}".encode()).decode()
        return json.dumps({"auths": {"registry.example.com": {"auth": v}}}, indent=2), [v]

    @case("slack-bot-token")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = f"xoxb-{g.s(12, '0123456789')}-{g.s(13, '0123456789')}-{g.s(24)}"
        return f"SLACK_BOT_TOKEN={v}\n", [v]

    @case("slack-user-token")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = f"xoxp-{g.s(12, '0123456789')}-{g.s(12, '0123456789')}-{g.s(13, '0123456789')}-{g.s(32, HEX)}"
        return f"curl -H 'Authorization: Bearer {v}' https://slack.com/api/auth.test\n", [v]

    @case("slack-app-token")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = f"xapp-1-A{g.s(10, UPPER)}-{g.s(13, '0123456789')}-{g.s(64, HEX)}"
        return f"SLACK_APP_TOKEN={v}\n", [v]

    @case("slack-webhook")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = f"https://hooks.slack.com/services/T{g.s(8, UPPER)}/B{g.s(8, UPPER)}/{g.s(24)}"
        return f"webhook_url: {v}\n", [v]

    @case("telegram-bot-token")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = f"{g.rng.randint(10**8, 10**10 - 1)}:AA{g.s(33, URL)}"
        return f"bot = Bot(token='{v}')\n", [v]

    @case("discord-bot-token")
    def _(g: _Gen) -> tuple[str, list[str]]:
        uid = base64.b64encode(str(g.rng.randint(10**17, 10**18)).encode()).decode().rstrip("=")
        v = f"{uid}.{g.s(6, URL)}.{g.s(38, URL)}"
        return f"DISCORD_TOKEN={v}\n", [v]

    @case("discord-webhook")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = f"https://discord.com/api/webhooks/{g.rng.randint(10**17, 10**18)}/{g.s(68, URL)}"
        return f'requests.post("{v}", json=payload)\n', [v]

    @case("stripe-secret-key")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = g.pick(["sk_live_", "rk_live_"]) + g.s(99)
        return f"STRIPE_SECRET_KEY={v}\n", [v]

    @case("stripe-webhook-secret")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = "whsec_" + g.s(32)
        return f"stripe:\n  webhook_secret: {v}\n", [v]

    @case("square-token")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = "EAAA" + g.s(60, URL)
        return f"SQUARE_ACCESS_TOKEN={v}\n", [v]

    @case("sendgrid-key")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = f"SG.{g.s(22, URL)}.{g.s(43, URL)}"
        return f"sg = SendGridAPIClient('{v}')\n", [v]

    @case("twilio-key")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = "SK" + g.s(32, HEX)
        return f"TWILIO_ACCOUNT_SID=AC{g.s(32, HEX)}\nTWILIO_API_KEY={v}\n", [v]

    @case("mailgun-key")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = "key-" + g.s(32, HEX)
        return f"curl -s --user 'api:{v}' https://api.mailgun.net/v3/domains\n", [v]

    @case("mailchimp-key")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = g.s(32, HEX) + "-us" + str(g.rng.randint(1, 21))
        return f"MAILCHIMP_API_KEY={v}\n", [v]

    @case("openai-key")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = "sk-proj-" + g.s(74, URL) + "T3BlbkFJ" + g.s(74, URL)
        return f"client = OpenAI(api_key=\"{v}\")\n", [v]

    @case("anthropic-key")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = "sk-ant-api03-" + g.s(93, URL) + "AA"
        return f"ANTHROPIC_API_KEY={v}\n", [v]

    @case("huggingface-token")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = "hf_" + g.s(34, string.ascii_letters)
        return f"$ huggingface-cli login --token {v}\nLogin successful\n", [v]

    @case("groq-key")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = "gsk_" + g.s(52)
        return f"GROQ_API_KEY={v}\n", [v]

    @case("jwt")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = g.jwt()
        return f"{g.ts()} DEBUG request headers={{'Authorization': 'Bearer {v}'}}\n", [v]

    @case("rsa-private-key")
    def _(g: _Gen) -> tuple[str, list[str]]:
        pem, body = g.pem("RSA PRIVATE KEY", 12)
        return f"$ cat deploy/id_rsa\n{pem}$ ls\n", body

    @case("openssh-private-key")
    def _(g: _Gen) -> tuple[str, list[str]]:
        pem, body = g.pem("OPENSSH PRIVATE KEY", 6)
        return pem, body

    @case("private-key-head")
    def _(g: _Gen) -> tuple[str, list[str]]:
        pem, _body = g.pem("PRIVATE KEY", 10)
        shown = pem.splitlines()[:5]
        return "$ head -n 5 server.key\n" + "\n".join(shown) + "\n", [line for line in shown if "-----" not in line]

    @case("private-key-tail")
    def _(g: _Gen) -> tuple[str, list[str]]:
        pem, _body = g.pem("EC PRIVATE KEY", 6)
        shown = pem.splitlines()[-4:]
        return "$ tail -n 4 ec.pem\n" + "\n".join(shown) + "\n", [line for line in shown if "-----" not in line]

    @case("private-key-in-dotenv")
    def _(g: _Gen) -> tuple[str, list[str]]:
        pem, body = g.pem("PRIVATE KEY", 6)
        return f"APP_ENV=prod\nPRIVATE_KEY={json.dumps(pem)}\n", body

    @case("age-secret-key")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = "AGE-SECRET-KEY-1" + g.s(58, "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L")
        return f"# created: {g.ts()}\n# public key: age1{g.s(58, 'qpzry9x8gf2tvdw0s3jn54khce6mua7l')}\n{v}\n", [v]

    @case("http-basic-header")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = base64.b64encode(f"admin:{g.s(16)}".encode()).decode()
        return f"> GET /api/v1/status HTTP/1.1\n> Authorization: Basic {v}\n> Accept: */*\n", [v]

    @case("bearer-opaque-header")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = g.s(40, URL)
        return f"curl -H \"Authorization: Bearer {v}\" https://api.internal/v2/jobs\n", [v]

    @case("database-url")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = g.password()
        scheme = g.pick(["postgres", "postgresql", "mysql", "mongodb+srv"])
        return f"DATABASE_URL={scheme}://app:{v}@db.internal:5432/app\n", [v]

    @case("redis-url")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = g.s(24)
        return f"CELERY_BROKER_URL=redis://:{v}@cache:6379/0\n", [v]

    @case("password-assignment")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = g.password()
        return f"{g.pick(['DB_PASSWORD', 'MYSQL_ROOT_PASSWORD', 'ADMIN_PASS', 'SMTP_PASSWORD'])}={v}\n", [v]

    @case("yaml-client-secret")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = g.s(32)
        return f"oauth:\n  client_id: web-{g.s(6, HEX)}\n  client_secret: \"{v}\"\n", [v]

    @case("digitalocean-token")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = "dop_v1_" + g.s(64, HEX)
        return f"$ doctl auth init --access-token {v}\n", [v]

    @case("linear-api-key")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = "lin_api_" + g.s(40)
        return f"LINEAR_API_KEY={v}\n", [v]

    @case("vault-token")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = "hvs." + g.s(91, URL)
        return f"$ export VAULT_TOKEN={v}\n$ vault kv get secret/app\n", [v]

    @case("netrc")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = g.s(20)
        return f"machine api.heroku.com\n  login ci@example.com\n  password {v}\n", [v]

    @case("curl-user")
    def _(g: _Gen) -> tuple[str, list[str]]:
        v = g.s(18)
        return f"$ curl -u deploy:{v} https://artifacts.internal/upload -T build.tar\n", [v]

    return gens


def _lookalike_generators() -> dict[str, Callable[[_Gen], Case]]:
    def text(category: str, fn: Callable[[_Gen], str]) -> Callable[[_Gen], Case]:
        return lambda g: Case(category, fn(g))

    words = ["token", "secret", "password", "key", "credential", "auth"]
    return {
        "git-log": text("git-log", lambda g: f"commit {g.s(40, HEX)}\nMerge: {g.s(7, HEX)} {g.s(7, HEX)}\n"),
        "uuid-request-ids": text(
            "uuid-request-ids",
            lambda g: f"{g.ts()} INFO request_id={g.s(8, HEX)}-{g.s(4, HEX)}-4{g.s(3, HEX)}"
            f"-a{g.s(3, HEX)}-{g.s(12, HEX)} status=200\n",
        ),
        "image-digest": text("image-digest", lambda g: f"Digest: sha256:{g.s(64, HEX)}\nStatus: Image is up to date\n"),
        "lockfile-integrity": text(
            "lockfile-integrity",
            lambda g: f'  "integrity": "sha512-{g.s(86, B64)}==",\n  "resolved": "https://npm.example.com/x/-/x-1.2.3.tgz"\n',
        ),
        "token-from-code": text(
            "token-from-code",
            lambda g: g.pick(
                [
                    "token = auth_client.fetch_access_token(scope=SCOPE)\n",
                    "api_key = os.environ.get('OPENAI_API_KEY')\n",
                    "const secret = await secretsManager.getSecretValue({ SecretId: name });\n",
                    "password = getpass.getpass(prompt='Password: ')\n",
                    "self.refresh_token = response.json()['refresh_token']\n",
                ]
            ),
        ),
        "template-placeholders": text(
            "template-placeholders",
            lambda g: g.pick(
                [
                    "API_KEY=<your-api-key>\n",
                    "password: ${DB_PASSWORD}\n",
                    "token: {{ .Values.token }}\n",
                    "SECRET_KEY=changeme\n",
                    "client_secret: \"${{ secrets.CLIENT_SECRET }}\"\n",
                ]
            ),
        ),
        "urls-without-passwords": text(
            "urls-without-passwords",
            lambda g: f"fetching https://example.org:8443/api/v{g.rng.randint(1, 3)}/items?page={g.rng.randint(1, 9)}\n"
            f"git@github.com:org/{g.s(6, string.ascii_lowercase)}.git\n",
        ),
        "prose-about-secrets": text(
            "prose-about-secrets",
            lambda g: f"The {g.pick(words)} expired, so the client asked for a new one and retried the request.\n",
        ),
        "test-output": text(
            "test-output",
            lambda g: f"tests/test_auth.py::test_{g.pick(words)}_rotation_{g.s(4, string.ascii_lowercase)}"
            " PASSED [ 42%]\n",
        ),
        "traceback": text(
            "traceback",
            lambda g: f'  File "/app/auth.py", line {g.rng.randint(10, 300)}, in validate_token\n'
            f"    raise InvalidTokenError('{g.pick(words)} has expired')\n",
        ),
        "java-class-names": text(
            "java-class-names",
            lambda g: "at org.springframework.security.oauth2.server.resource.BearerTokenAuthenticationFilter"
            f".doFilterInternal(BearerTokenAuthenticationFilter.java:{g.rng.randint(100, 200)})\n",
        ),
        "ssh-public-key": text(
            "ssh-public-key", lambda g: f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{g.s(43, B64)} dev@laptop\n"
        ),
        "age-recipient": text(
            "age-recipient", lambda g: f"recipient: age1{g.s(58, 'qpzry9x8gf2tvdw0s3jn54khce6mua7l')}\n"
        ),
        "certificate-header": text(
            "certificate-header", lambda g: "subject=CN = example.org\nissuer=C = US, O = Let's Encrypt, CN = R11\n"
        ),
        "semver-and-ips": text(
            "semver-and-ips",
            lambda g: f"listening on 10.{g.rng.randint(0, 255)}.{g.rng.randint(0, 255)}.{g.rng.randint(1, 254)}:8080"
            f" version={g.rng.randint(0, 9)}.{g.rng.randint(0, 30)}.{g.rng.randint(0, 9)}\n",
        ),
        "file-paths": text(
            "file-paths",
            lambda g: f"src/{g.pick(words)}/{g.s(8, string.ascii_lowercase)}/handlers/"
            f"refresh_{g.pick(words)}.py:12: W0611\n",
        ),
        "css-and-colors": text("css-and-colors", lambda g: f".btn-{g.pick(words)} {{ color: #{g.s(6, HEX)}; }}\n"),
        "kubernetes-manifest": text(
            "kubernetes-manifest",
            lambda g: "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app-secrets\ntype: Opaque\n"
            "stringData:\n  DB_HOST: db.internal\n",
        ),
        "hash-assignments": text(
            "hash-assignments", lambda g: f"checksum_sha1 = \"{g.s(40, HEX)}\"\netag: W/\"{g.s(32, HEX)}\"\n"
        ),
        "short-base64": text(
            "short-base64",
            lambda g: "echo "
            + base64.b64encode(g.pick(["hello world", "status ok", "ping"]).encode()).decode()
            + " | base64 -d\n",
        ),
        "sk-learn-and-prefixes": text(
            "sk-learn-and-prefixes",
            lambda g: g.pick(["pip install sk-learn-helpers\n", "ghost_town = True\n", "the eyJ prefix marks JSON\n"]),
        ),
        "env-without-secrets": text(
            "env-without-secrets",
            lambda g: f"NODE_ENV=production\nPORT={g.rng.randint(3000, 9000)}\n"
            "LOG_LEVEL=info\nTOKEN_TTL_SECONDS=3600\n",
        ),
        "minified-identifiers": text(
            "minified-identifiers",
            lambda g: "function refreshTokenIfNeeded(currentSession)"
            "{return currentSession.tokenExpiresAt<Date.now()}\n",
        ),
        "timestamps-and-durations": text(
            "timestamps-and-durations", lambda g: f"{g.ts()} took {g.rng.randint(1, 999)}ms key=user:{g.s(6, HEX)}\n"
        ),
        "docker-build-log": text(
            "docker-build-log",
            lambda g: "#7 [3/5] RUN pip install -r requirements.txt\n"
            f"#7 DONE {g.rng.randint(1, 60)}.{g.rng.randint(0, 9)}s\n",
        ),
    }


def generate(seed: int = 14, per_secret: int = 10, per_lookalike: int = 10) -> list[Case]:
    """The corpus: ``per_secret`` cases of each secret format, then ``per_lookalike`` of each look-alike."""
    g = _Gen(random.Random(seed))
    cases: list[Case] = []
    for make in _secret_generators().values():
        cases += [make(g) for _ in range(per_secret)]
    for make in _lookalike_generators().values():
        cases += [make(g) for _ in range(per_lookalike)]
    return cases
