"""The authority module on its own: principals, the table, subtree walks and refusals."""

from __future__ import annotations

import pytest

from hydra_sandbox.authority import (
    COMPONENTS,
    MAX_DEPTH,
    OPERATOR,
    PROFILE_PROMPTS,
    ROLES,
    Action,
    Agent,
    Kind,
    Role,
    agent_components,
    authorize,
    authorize_component,
    component,
    component_key,
    in_subtree,
    namespace,
    resource_for,
    visible,
)
from hydra_sandbox.errors import AccessDenied, PolicyViolation


class Tree:
    def __init__(self, parents: dict[str, str | None]) -> None:
        self.parents = parents

    def parent_of(self, session_id: str) -> str | None:
        return self.parents.get(session_id)


FAMILY = Tree({"root": None, "child": "root", "grandchild": "child", "stranger": None})


def test_every_action_and_every_row_names_who_may_do_it() -> None:
    assert set(ROLES) == set(Action), "an action without roles is refused to everyone: list it"
    keys = [(c.kind, c.key) for c in COMPONENTS]
    assert len(keys) == len(set(keys)), "a component has two rows"
    for row in COMPONENTS:
        assert Role.OPERATOR in row.roles, f"{row.key}: the operator may do everything an agent may"
        assert (row.agent_scope == "-") == (Role.AGENT not in row.roles), f"{row.key}: scope and roles disagree"


@pytest.mark.parametrize("action", [Action.APPLY, Action.DISCARD, Action.STATUS, Action.PROMPT])
def test_an_agent_is_refused_operator_actions_even_on_its_own_session(action: Action) -> None:
    for session_id in (None, "root", "child"):
        with pytest.raises(AccessDenied, match="agent session root may not"):
            authorize(Agent(session_id="root"), action, session_id=session_id, tree=FAMILY)
    authorize(OPERATOR, action, session_id="stranger", tree=FAMILY)


def test_an_agent_reaches_its_own_subtree_and_nothing_else() -> None:
    agent = Agent(session_id="child")
    for session_id in ("child", "grandchild"):
        authorize(agent, Action.READ, session_id=session_id, tree=FAMILY)
        assert visible(agent, session_id, FAMILY)
    for session_id in ("root", "stranger", "never-heard-of"):
        with pytest.raises(AccessDenied, match="not visible to agent session child"):
            authorize(agent, Action.CONTROL, session_id=session_id, tree=FAMILY)
        assert not visible(agent, session_id, FAMILY)
    assert issubclass(AccessDenied, PolicyViolation)


def test_a_session_check_without_the_tree_is_refused_not_waved_through() -> None:
    with pytest.raises(AccessDenied):
        authorize(Agent(session_id="root"), Action.READ, session_id="root", tree=None)


def test_a_cycle_or_a_chain_deeper_than_the_bound_is_not_in_the_subtree() -> None:
    cycle = Tree({"a": "b", "b": "c", "c": "a"})
    assert not in_subtree("x", "a", cycle)
    assert in_subtree("c", "a", cycle)  # reached before the walk comes round again
    chain = Tree({f"s{i}": f"s{i + 1}" for i in range(MAX_DEPTH + 10)})
    assert in_subtree("s5", "s0", chain)
    assert not in_subtree(f"s{MAX_DEPTH + 5}", "s0", chain), "the walk is bounded"


def test_refusals_quote_a_hostile_session_id_on_one_line() -> None:
    hostile = "s-1\n\x00" + "x" * 5000
    with pytest.raises(AccessDenied) as info:
        authorize(Agent(session_id="root"), Action.READ, session_id=hostile, tree=FAMILY)
    assert "\n" not in str(info.value) and len(str(info.value)) < 300


def test_idempotency_namespaces_differ_per_principal() -> None:
    names = {namespace(OPERATOR), namespace(Agent(session_id="a")), namespace(Agent(session_id="b"))}
    assert len(names) == 3


def test_the_agent_surface_is_what_the_table_allows() -> None:
    assert agent_components(Kind.TOOL) == {
        "spawn_agent",
        "list_agents",
        "list_sessions",
        "wait_session",
        "tail_logs",
        "summarize_session",
        "terminate_session",
        "resume_session",
        "log_context",
        "search_context",
        "get_diff",
    }
    assert not {"apply_diff", "discard_diff"} & agent_components(Kind.TOOL)
    assert "hydra://status" not in agent_components(Kind.RESOURCE)
    assert agent_components(Kind.PROMPT) == frozenset()


def test_resource_uris_find_their_template_row_and_profile_prompts_share_one() -> None:
    row = resource_for("hydra://sessions/s-abc%2F..")
    assert row is not None and row.key == "hydra://sessions/{session_id}"
    assert resource_for("hydra://sessions/a/b") is None
    assert resource_for("hydra://status") == component(Kind.RESOURCE, "hydra://status")
    assert resource_for("hydra://secrets") is None
    assert component_key(Kind.PROMPT, "code_reviewer", {"profile"}) == PROFILE_PROMPTS
    assert component_key(Kind.PROMPT, "code_reviewer") == "code_reviewer"


def test_a_component_missing_from_the_table_is_refused_to_everyone() -> None:
    for principal in (OPERATOR, Agent(session_id="root")):
        with pytest.raises(AccessDenied, match="not in Hydra's authority table"):
            authorize_component(principal, Kind.TOOL, "format_disk", "format_disk")
    with pytest.raises(AccessDenied, match="apply_diff: agent session root may not"):
        authorize_component(Agent(session_id="root"), Kind.TOOL, "apply_diff", "apply_diff")
