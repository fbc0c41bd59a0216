"""What docs/testing.md promises about scripted failures and waits, checked against the real Codex CLI
in real sandboxes (through the plugin's in-process fixtures): a 5xx answer is retried (the retry takes
the next step), a 4xx answer ends the run with the scripted message, a wait only delays."""

from __future__ import annotations

import pytest

from hydra_sandbox.settings import REPO_ROOT

pytestmark = pytest.mark.docker
CALC = REPO_ROOT / "examples" / "testing" / "tests" / "fixtures" / "calc"
SCRIPT = {
    "hydra_script": 1,
    "routes": [
        {
            "match": "RETRY-4A",
            "steps": [
                {"fail": {"status": 503, "message": "scripted overload"}},
                {"wait": 1},
                {"reply": "Summary: answered after one retry."},
            ],
        },
        {
            "match": "GIVE-UP-4B",
            "steps": [{"fail": {"status": 400, "message": "scripted refusal"}}, {"reply": "never sent"}],
        },
    ],
}


async def test_codex_retries_a_scripted_5xx_and_ends_the_run_on_a_scripted_4xx(
    hydra_workspace, hydra_scripted_model, hydra_in_process
) -> None:
    repo = hydra_workspace(CALC)
    model = await hydra_scripted_model(SCRIPT)
    hydra = await hydra_in_process(model)
    retried = await hydra.spawn(repo, "RETRY-4A: say something")
    refused = await hydra.spawn(repo, "GIVE-UP-4B: say something")

    after_retry = await retried.wait(timeout_s=300)
    assert after_retry.status == "completed", after_retry.reason
    assert any("answered after one retry" in e.text for e in await retried.events())
    given_up = await refused.wait(timeout_s=300)
    assert given_up.status == "failed"
    assert "scripted refusal" in " ".join(e.text for e in await refused.events())

    taken = {r.route: sum(r.taken.values()) for r in model.report().routes}
    assert taken == {"route 1 (match 'RETRY-4A')": 2, "route 2 (match 'GIVE-UP-4B')": 1}
    assert model.report().errors == [] and model.report().overruns == []
