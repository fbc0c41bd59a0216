"""A generated corpus for the masking benchmark: 52 secret formats in the files and commands they show
up in during development (10 cases each, 520 secrets) and 25 kinds of look-alikes (10 each, 250 files
with no secret; ``masking_lookalikes.py``). Values are random but well-formed: GitHub and npm tokens
carry their CRC32 checksum, JWTs and Docker auths decode, keys are wrapped as tools write them.
Deterministic for a given seed.

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


class Gen:
    """Random but well-formed values from one seeded generator."""

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
        claims = {"sub": self.s(12, HEX), "iat": self.rng.randint(1_700_000_000, 1_800_000_000), "scope": "read write"}
        return f"{header}.{self.b64url(json.dumps(claims).encode())}.{self.s(43, URL)}"

    def pem(self, kind: str, lines: int) -> tuple[str, list[str]]:
        body = [self.s(64, B64) for _ in range(lines)] + [self.s(self.rng.randint(8, 60), B64) + "=="]
        return f"-----BEGIN {kind}-----\n" + "\n".join(body) + f"\n-----END {kind}-----\n", body

    def password(self) -> str:
        return self.s(6) + self.pick(["/", "@", "#", "!", "%", "+", "&", "$"]) + self.s(8) + self.pick(["", "/", "@"])

    def ts(self) -> str:
        return f"2026-11-{self.rng.randint(10, 28)}T{self.rng.randint(10, 23)}:{self.rng.randint(10, 59)}:07Z"


def _aws_access_key_id(g: Gen) -> tuple[str, list[str]]:
    v = g.pick(["AKIA", "ASIA"]) + g.s(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
    return f"[default]\naws_access_key_id = {v}\nregion = eu-west-1\n", [v]


def _aws_secret_key(g: Gen) -> tuple[str, list[str]]:
    v = g.s(40, B64)
    return f"[prod]\naws_access_key_id = AKIA{g.s(16, UPPER)}\naws_secret_access_key = {v}\n", [v]


def _aws_secret_bare(g: Gen) -> tuple[str, list[str]]:
    v = g.s(20, B64) + "/" + g.s(19, B64)
    return f"$ aws configure get aws_secret_access_key --profile ci\n{v}\n$ echo ok\nok\n", [v]


def _gcp_service_account(g: Gen) -> tuple[str, list[str]]:
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
    return json.dumps(doc, indent=2) + "\n", body[:-1]  # the key; its id identifies it, it grants nothing


def _google_api_key(g: Gen) -> tuple[str, list[str]]:
    v = "AIza" + g.s(35, URL)
    return f'const firebaseConfig = {{ apiKey: "{v}", projectId: "demo" }};\n', [v]


def _google_oauth_secret(g: Gen) -> tuple[str, list[str]]:
    v = "GOCSPX-" + g.s(28, URL)
    return json.dumps({"installed": {"client_id": f"{g.s(12, '0123456789')}.apps", "client_secret": v}}), [v]


def _azure_ad_client_secret(g: Gen) -> tuple[str, list[str]]:
    v = g.s(3) + str(g.rng.randint(0, 9)) + "Q~" + g.s(34, AN + "_~.-")
    return f"AZURE_CLIENT_ID={g.s(8, HEX)}-{g.s(4, HEX)}\nAZURE_CLIENT_SECRET={v}\n", [v]


def _azure_storage_key(g: Gen) -> tuple[str, list[str]]:
    v = g.s(86, B64) + "=="
    return f"ConnectionString=DefaultEndpointsProtocol=https;AccountName=demo;AccountKey={v};\n", [v]


def _github_classic_pat(g: Gen) -> tuple[str, list[str]]:
    v = g.crc_token("ghp_")
    return f"$ git clone https://x-access-token:{v}@github.com/org/repo.git\nCloning into 'repo'...\n", [v]


def _github_fine_grained_pat(g: Gen) -> tuple[str, list[str]]:
    v = "github_pat_11" + g.s(20, UPPER) + "_" + g.s(59)
    return f"export GH_TOKEN={v}\ngh auth status\n", [v]


def _github_app_token(g: Gen) -> tuple[str, list[str]]:
    v = g.crc_token(g.pick(["ghs_", "ghu_", "gho_"]))
    return f'{{"token": "{v}", "expires_at": "{g.ts()}"}}\n', [v]


def _gitlab_token(g: Gen) -> tuple[str, list[str]]:
    v = g.pick(["glpat-", "gldt-", "glrt-"]) + g.s(20, URL)
    return f"variables:\n  GITLAB_TOKEN: {v}\n", [v]


def _npm_token(g: Gen) -> tuple[str, list[str]]:
    v = g.crc_token("npm_")
    return f"registry=https://npm.example.com/\n//npm.example.com/:_authToken={v}\n", [v]


def _pypi_token(g: Gen) -> tuple[str, list[str]]:
    v = "pypi-AgEIcHlwaS5vcmc" + g.s(g.rng.randint(60, 160), URL)
    return f"[pypi]\n  username = __token__\n  password = {v}\n", [v]


def _rubygems_key(g: Gen) -> tuple[str, list[str]]:
    v = "rubygems_" + g.s(48, HEX)
    return f"---\n:rubygems_api_key: {v}\n", [v]


def _docker_config_auth(g: Gen) -> tuple[str, list[str]]:
    v = base64.b64encode(f"deploy:{g.s(24)}".encode()).decode()
    return json.dumps({"auths": {"registry.example.com": {"auth": v}}}, indent=2), [v]


def _slack_bot_token(g: Gen) -> tuple[str, list[str]]:
    v = f"xoxb-{g.s(12, '0123456789')}-{g.s(13, '0123456789')}-{g.s(24)}"
    return f"SLACK_BOT_TOKEN={v}\n", [v]


def _slack_user_token(g: Gen) -> tuple[str, list[str]]:
    v = f"xoxp-{g.s(12, '0123456789')}-{g.s(12, '0123456789')}-{g.s(13, '0123456789')}-{g.s(32, HEX)}"
    return f"curl -H 'Authorization: Bearer {v}' https://slack.com/api/auth.test\n", [v]


def _slack_app_token(g: Gen) -> tuple[str, list[str]]:
    v = f"xapp-1-A{g.s(10, UPPER)}-{g.s(13, '0123456789')}-{g.s(64, HEX)}"
    return f"SLACK_APP_TOKEN={v}\n", [v]


def _slack_webhook(g: Gen) -> tuple[str, list[str]]:
    v = f"https://hooks.slack.com/services/T{g.s(8, UPPER)}/B{g.s(8, UPPER)}/{g.s(24)}"
    return f"webhook_url: {v}\n", [v]


def _telegram_bot_token(g: Gen) -> tuple[str, list[str]]:
    v = f"{g.rng.randint(10**8, 10**10 - 1)}:AA{g.s(33, URL)}"
    return f"bot = Bot(token='{v}')\n", [v]


def _discord_bot_token(g: Gen) -> tuple[str, list[str]]:
    uid = base64.b64encode(str(g.rng.randint(10**17, 10**18)).encode()).decode().rstrip("=")
    v = f"{uid}.{g.s(6, URL)}.{g.s(38, URL)}"
    return f"DISCORD_TOKEN={v}\n", [v]


def _discord_webhook(g: Gen) -> tuple[str, list[str]]:
    v = f"https://discord.com/api/webhooks/{g.rng.randint(10**17, 10**18)}/{g.s(68, URL)}"
    return f'requests.post("{v}", json=payload)\n', [v]


def _stripe_secret_key(g: Gen) -> tuple[str, list[str]]:
    v = g.pick(["sk_live_", "rk_live_"]) + g.s(99)
    return f"STRIPE_SECRET_KEY={v}\n", [v]


def _stripe_webhook_secret(g: Gen) -> tuple[str, list[str]]:
    v = "whsec_" + g.s(32)
    return f"stripe:\n  webhook_secret: {v}\n", [v]


def _square_token(g: Gen) -> tuple[str, list[str]]:
    v = "EAAA" + g.s(60, URL)
    return f"SQUARE_ACCESS_TOKEN={v}\n", [v]


def _sendgrid_key(g: Gen) -> tuple[str, list[str]]:
    v = f"SG.{g.s(22, URL)}.{g.s(43, URL)}"
    return f"sg = SendGridAPIClient('{v}')\n", [v]


def _twilio_key(g: Gen) -> tuple[str, list[str]]:
    v = "SK" + g.s(32, HEX)
    return f"TWILIO_ACCOUNT_SID=AC{g.s(32, HEX)}\nTWILIO_API_KEY={v}\n", [v]


def _mailgun_key(g: Gen) -> tuple[str, list[str]]:
    v = "key-" + g.s(32, HEX)
    return f"curl -s --user 'api:{v}' https://api.mailgun.net/v3/domains\n", [v]


def _mailchimp_key(g: Gen) -> tuple[str, list[str]]:
    v = g.s(32, HEX) + "-us" + str(g.rng.randint(1, 21))
    return f"MAILCHIMP_API_KEY={v}\n", [v]


def _openai_key(g: Gen) -> tuple[str, list[str]]:
    v = "sk-proj-" + g.s(74, URL) + "T3BlbkFJ" + g.s(74, URL)
    return f'client = OpenAI(api_key="{v}")\n', [v]


def _anthropic_key(g: Gen) -> tuple[str, list[str]]:
    v = "sk-ant-api03-" + g.s(93, URL) + "AA"
    return f"ANTHROPIC_API_KEY={v}\n", [v]


def _huggingface_token(g: Gen) -> tuple[str, list[str]]:
    v = "hf_" + g.s(34, string.ascii_letters)
    return f"$ huggingface-cli login --token {v}\nLogin successful\n", [v]


def _groq_key(g: Gen) -> tuple[str, list[str]]:
    v = "gsk_" + g.s(52)
    return f"GROQ_API_KEY={v}\n", [v]


def _jwt(g: Gen) -> tuple[str, list[str]]:
    v = g.jwt()
    return f"{g.ts()} DEBUG request headers={{'Authorization': 'Bearer {v}'}}\n", [v]


def _rsa_private_key(g: Gen) -> tuple[str, list[str]]:
    pem, body = g.pem("RSA PRIVATE KEY", 12)
    return f"$ cat deploy/id_rsa\n{pem}$ ls\n", body


def _openssh_private_key(g: Gen) -> tuple[str, list[str]]:
    pem, body = g.pem("OPENSSH PRIVATE KEY", 6)
    return pem, body


def _private_key_head(g: Gen) -> tuple[str, list[str]]:
    pem, _body = g.pem("PRIVATE KEY", 10)
    shown = pem.splitlines()[:5]
    return "$ head -n 5 server.key\n" + "\n".join(shown) + "\n", [line for line in shown if "-----" not in line]


def _private_key_tail(g: Gen) -> tuple[str, list[str]]:
    pem, _body = g.pem("EC PRIVATE KEY", 6)
    shown = pem.splitlines()[-4:]
    return "$ tail -n 4 ec.pem\n" + "\n".join(shown) + "\n", [line for line in shown if "-----" not in line]


def _private_key_in_dotenv(g: Gen) -> tuple[str, list[str]]:
    pem, body = g.pem("PRIVATE KEY", 6)
    return f"APP_ENV=prod\nPRIVATE_KEY={json.dumps(pem)}\n", body


def _age_secret_key(g: Gen) -> tuple[str, list[str]]:
    v = "AGE-SECRET-KEY-1" + g.s(58, "QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L")
    return f"# created: {g.ts()}\n# public key: age1{g.s(58, 'qpzry9x8gf2tvdw0s3jn54khce6mua7l')}\n{v}\n", [v]


def _http_basic_header(g: Gen) -> tuple[str, list[str]]:
    v = base64.b64encode(f"admin:{g.s(16)}".encode()).decode()
    return f"> GET /api/v1/status HTTP/1.1\n> Authorization: Basic {v}\n> Accept: */*\n", [v]


def _bearer_opaque_header(g: Gen) -> tuple[str, list[str]]:
    v = g.s(40, URL)
    return f'curl -H "Authorization: Bearer {v}" https://api.internal/v2/jobs\n', [v]


def _database_url(g: Gen) -> tuple[str, list[str]]:
    v = g.password()
    scheme = g.pick(["postgres", "postgresql", "mysql", "mongodb+srv"])
    return f"DATABASE_URL={scheme}://app:{v}@db.internal:5432/app\n", [v]


def _redis_url(g: Gen) -> tuple[str, list[str]]:
    v = g.s(24)
    return f"CELERY_BROKER_URL=redis://:{v}@cache:6379/0\n", [v]


def _password_assignment(g: Gen) -> tuple[str, list[str]]:
    v = g.password()
    return f"{g.pick(['DB_PASSWORD', 'MYSQL_ROOT_PASSWORD', 'ADMIN_PASS', 'SMTP_PASSWORD'])}={v}\n", [v]


def _yaml_client_secret(g: Gen) -> tuple[str, list[str]]:
    v = g.s(32)
    return f'oauth:\n  client_id: web-{g.s(6, HEX)}\n  client_secret: "{v}"\n', [v]


def _digitalocean_token(g: Gen) -> tuple[str, list[str]]:
    v = "dop_v1_" + g.s(64, HEX)
    return f"$ doctl auth init --access-token {v}\n", [v]


def _linear_api_key(g: Gen) -> tuple[str, list[str]]:
    v = "lin_api_" + g.s(40)
    return f"LINEAR_API_KEY={v}\n", [v]


def _vault_token(g: Gen) -> tuple[str, list[str]]:
    v = "hvs." + g.s(91, URL)
    return f"$ export VAULT_TOKEN={v}\n$ vault kv get secret/app\n", [v]


def _netrc(g: Gen) -> tuple[str, list[str]]:
    v = g.s(20)
    return f"machine api.heroku.com\n  login ci@example.com\n  password {v}\n", [v]


def _curl_user(g: Gen) -> tuple[str, list[str]]:
    v = g.s(18)
    return f"$ curl -u deploy:{v} https://artifacts.internal/upload -T build.tar\n", [v]


SECRET_FORMATS: dict[str, Callable[[Gen], tuple[str, list[str]]]] = {
    "aws-access-key-id": _aws_access_key_id,
    "aws-secret-key": _aws_secret_key,
    "aws-secret-bare": _aws_secret_bare,
    "gcp-service-account": _gcp_service_account,
    "google-api-key": _google_api_key,
    "google-oauth-secret": _google_oauth_secret,
    "azure-ad-client-secret": _azure_ad_client_secret,
    "azure-storage-key": _azure_storage_key,
    "github-classic-pat": _github_classic_pat,
    "github-fine-grained-pat": _github_fine_grained_pat,
    "github-app-token": _github_app_token,
    "gitlab-token": _gitlab_token,
    "npm-token": _npm_token,
    "pypi-token": _pypi_token,
    "rubygems-key": _rubygems_key,
    "docker-config-auth": _docker_config_auth,
    "slack-bot-token": _slack_bot_token,
    "slack-user-token": _slack_user_token,
    "slack-app-token": _slack_app_token,
    "slack-webhook": _slack_webhook,
    "telegram-bot-token": _telegram_bot_token,
    "discord-bot-token": _discord_bot_token,
    "discord-webhook": _discord_webhook,
    "stripe-secret-key": _stripe_secret_key,
    "stripe-webhook-secret": _stripe_webhook_secret,
    "square-token": _square_token,
    "sendgrid-key": _sendgrid_key,
    "twilio-key": _twilio_key,
    "mailgun-key": _mailgun_key,
    "mailchimp-key": _mailchimp_key,
    "openai-key": _openai_key,
    "anthropic-key": _anthropic_key,
    "huggingface-token": _huggingface_token,
    "groq-key": _groq_key,
    "jwt": _jwt,
    "rsa-private-key": _rsa_private_key,
    "openssh-private-key": _openssh_private_key,
    "private-key-head": _private_key_head,
    "private-key-tail": _private_key_tail,
    "private-key-in-dotenv": _private_key_in_dotenv,
    "age-secret-key": _age_secret_key,
    "http-basic-header": _http_basic_header,
    "bearer-opaque-header": _bearer_opaque_header,
    "database-url": _database_url,
    "redis-url": _redis_url,
    "password-assignment": _password_assignment,
    "yaml-client-secret": _yaml_client_secret,
    "digitalocean-token": _digitalocean_token,
    "linear-api-key": _linear_api_key,
    "vault-token": _vault_token,
    "netrc": _netrc,
    "curl-user": _curl_user,
}
"""Each secret format and how one case of it is made: the file's text and the values it holds."""


def generate(seed: int = 14, per_secret: int = 10, per_lookalike: int = 10) -> list[Case]:
    """The corpus: ``per_secret`` cases of each secret format, then ``per_lookalike`` of each look-alike."""
    g = Gen(random.Random(seed))
    cases: list[Case] = []
    for category, make_secret in SECRET_FORMATS.items():
        for _ in range(per_secret):
            text, values = make_secret(g)
            cases.append(Case(category, text, values))
    from benchmarks.masking_lookalikes import LOOKALIKES

    for category, make_text in LOOKALIKES.items():
        cases += [Case(category, make_text(g)) for _ in range(per_lookalike)]
    return cases
