"""The look-alikes of the masking benchmark's corpus: 25 kinds of text from development logs that hold
no secret but resemble one (hashes, ids, digests, code that handles tokens, placeholders, prose)."""

from __future__ import annotations

import base64
import string
from collections.abc import Callable

from benchmarks.masking_corpus import B64, HEX, Gen

_WORDS = ["token", "secret", "password", "key", "credential", "auth"]

LOOKALIKES: dict[str, Callable[[Gen], str]] = {
    "git-log": lambda g: f"commit {g.s(40, HEX)}\nMerge: {g.s(7, HEX)} {g.s(7, HEX)}\n",
    "uuid-request-ids": (
        lambda g: (
            f"{g.ts()} INFO request_id={g.s(8, HEX)}-{g.s(4, HEX)}-4{g.s(3, HEX)}"
            f"-a{g.s(3, HEX)}-{g.s(12, HEX)} status=200\n"
        )
    ),
    "image-digest": lambda g: f"Digest: sha256:{g.s(64, HEX)}\nStatus: Image is up to date\n",
    "lockfile-integrity": (
        lambda g: (
            f'  "integrity": "sha512-{g.s(86, B64)}==",\n  "resolved": "https://npm.example.com/x/-/x-1.2.3.tgz"\n'
        )
    ),
    "token-from-code": (
        lambda g: g.pick(
            [
                "token = auth_client.fetch_access_token(scope=SCOPE)\n",
                "api_key = os.environ.get('OPENAI_API_KEY')\n",
                "const secret = await secretsManager.getSecretValue({ SecretId: name });\n",
                "password = getpass.getpass(prompt='Password: ')\n",
                "self.refresh_token = response.json()['refresh_token']\n",
            ]
        )
    ),
    "template-placeholders": (
        lambda g: g.pick(
            [
                "API_KEY=<your-api-key>\n",
                "password: ${DB_PASSWORD}\n",
                "token: {{ .Values.token }}\n",
                "SECRET_KEY=changeme\n",
                'client_secret: "${{ secrets.CLIENT_SECRET }}"\n',
            ]
        )
    ),
    "urls-without-passwords": (
        lambda g: (
            f"fetching https://example.org:8443/api/v{g.rng.randint(1, 3)}/items?page={g.rng.randint(1, 9)}\n"
            f"git@github.com:org/{g.s(6, string.ascii_lowercase)}.git\n"
        )
    ),
    "prose-about-secrets": (
        lambda g: f"The {g.pick(_WORDS)} expired, so the client asked for a new one and retried the request.\n"
    ),
    "test-output": (
        lambda g: f"tests/test_auth.py::test_{g.pick(_WORDS)}_rotation_{g.s(4, string.ascii_lowercase)} PASSED [ 42%]\n"
    ),
    "traceback": (
        lambda g: (
            f'  File "/app/auth.py", line {g.rng.randint(10, 300)}, in validate_token\n'
            f"    raise InvalidTokenError('{g.pick(_WORDS)} has expired')\n"
        )
    ),
    "java-class-names": (
        lambda g: (
            "at org.springframework.security.oauth2.server.resource.BearerTokenAuthenticationFilter"
            f".doFilterInternal(BearerTokenAuthenticationFilter.java:{g.rng.randint(100, 200)})\n"
        )
    ),
    "ssh-public-key": (lambda g: f"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI{g.s(43, B64)} dev@laptop\n"),
    "age-recipient": (lambda g: f"recipient: age1{g.s(58, 'qpzry9x8gf2tvdw0s3jn54khce6mua7l')}\n"),
    "certificate-header": (lambda g: "subject=CN = example.org\nissuer=C = US, O = Let's Encrypt, CN = R11\n"),
    "semver-and-ips": (
        lambda g: (
            f"listening on 10.{g.rng.randint(0, 255)}.{g.rng.randint(0, 255)}.{g.rng.randint(1, 254)}:8080"
            f" version={g.rng.randint(0, 9)}.{g.rng.randint(0, 30)}.{g.rng.randint(0, 9)}\n"
        )
    ),
    "file-paths": (
        lambda g: (
            f"src/{g.pick(_WORDS)}/{g.s(8, string.ascii_lowercase)}/handlers/refresh_{g.pick(_WORDS)}.py:12: W0611\n"
        )
    ),
    "css-and-colors": lambda g: f".btn-{g.pick(_WORDS)} {{ color: #{g.s(6, HEX)}; }}\n",
    "kubernetes-manifest": (
        lambda g: (
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: app-secrets\ntype: Opaque\n"
            "stringData:\n  DB_HOST: db.internal\n"
        )
    ),
    "hash-assignments": (lambda g: f'checksum_sha1 = "{g.s(40, HEX)}"\netag: W/"{g.s(32, HEX)}"\n'),
    "short-base64": (
        lambda g: (
            "echo "
            + base64.b64encode(g.pick(["hello world", "status ok", "ping"]).encode()).decode()
            + " | base64 -d\n"
        )
    ),
    "sk-learn-and-prefixes": (
        lambda g: g.pick(["pip install sk-learn-helpers\n", "ghost_town = True\n", "the eyJ prefix marks JSON\n"])
    ),
    "env-without-secrets": (
        lambda g: f"NODE_ENV=production\nPORT={g.rng.randint(3000, 9000)}\nLOG_LEVEL=info\nTOKEN_TTL_SECONDS=3600\n"
    ),
    "minified-identifiers": (
        lambda g: "function refreshTokenIfNeeded(currentSession){return currentSession.tokenExpiresAt<Date.now()}\n"
    ),
    "timestamps-and-durations": (lambda g: f"{g.ts()} took {g.rng.randint(1, 999)}ms key=user:{g.s(6, HEX)}\n"),
    "docker-build-log": (
        lambda g: (
            f"#7 [3/5] RUN pip install -r requirements.txt\n#7 DONE {g.rng.randint(1, 60)}.{g.rng.randint(0, 9)}s\n"
        )
    ),
}
"""Each kind of look-alike and how one file of it is made."""
