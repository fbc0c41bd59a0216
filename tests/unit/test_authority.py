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
    describe,
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


def test_the_subtree_walk_reaches_exactly_max_depth_parents_up() -> None:
    chain = Tree({f"s{i}": f"s{i + 1}" for i in range(MAX_DEPTH + 10)})
    assert in_subtree(f"s{MAX_DEPTH}", "s0", chain), "an ancestor MAX_DEPTH steps up is still placed"
    assert not in_subtree(f"s{MAX_DEPTH + 1}", "s0", chain), "one step further is not"
    assert in_subtree("s0", "s0", chain) and not in_subtree("s1", "s0", Tree({}))


def test_a_self_parented_session_or_a_cycle_never_places_a_stranger() -> None:
    loop = Tree({"a": "a"})
    assert in_subtree("a", "a", loop) and not in_subtree("b", "a", loop)
    cycle = Tree({"a": "b", "b": "a"})
    assert in_subtree("b", "a", cycle) and not in_subtree("root", "a", cycle)
    assert not visible(Agent(session_id="root"), "a", cycle)


def test_an_action_missing_from_the_roles_table_is_refused_to_everyone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(ROLES, Action.CATALOG)
    row = component(Kind.TOOL, "list_agents")
    assert row is not None and row.roles == frozenset()
    for principal in (OPERATOR, Agent(session_id="root")):
        with pytest.raises(AccessDenied, match=f"^{describe(principal)} may not catalog "):
            authorize(principal, Action.CATALOG)
        with pytest.raises(AccessDenied, match=f"^list_agents: {describe(principal)} may not catalog"):
            authorize_component(principal, Kind.TOOL, "list_agents", "list_agents")
    assert "list_agents" not in agent_components(Kind.TOOL)


def test_a_refused_operator_action_says_what_it_would_do_and_who_can() -> None:
    expected = {
        Action.APPLY: "write a session's diff to the host",
        Action.DISCARD: "throw a session's diff away",
        Action.STATUS: "read the server's status",
        Action.PROMPT: "use the operator's prompts",
    }
    for action, does in expected.items():
        with pytest.raises(AccessDenied) as info:
            authorize(Agent(session_id="s-1"), action)
        assert info.value.message == f"agent session s-1 may not {does}"
        assert info.value.hint is not None and info.value.hint.startswith("only the operator can")


def test_a_session_outside_the_subtree_is_named_in_the_refusal() -> None:
    with pytest.raises(AccessDenied) as info:
        authorize(Agent(session_id="child"), Action.READ, session_id="root", tree=FAMILY)
    assert info.value.message == "session 'root': not visible to agent session child"
    assert info.value.hint == "an agent's token is valid only for its own session and the sessions it spawned"
    authorize(Agent(session_id="child"), Action.READ, tree=FAMILY)  # no session named: the role decides
    authorize(OPERATOR, Action.READ, session_id="anything", tree=None)  # the operator needs no tree


def test_principals_are_described_and_namespaced_by_who_they_are() -> None:
    assert describe(OPERATOR) == "the operator" and describe(Agent(session_id="s-9")) == "agent session s-9"
    assert namespace(OPERATOR) == "operator" and namespace(Agent(session_id="s-9")) == "agent:s-9"
    assert visible(OPERATOR, "never-heard-of", FAMILY)


def test_a_component_refusal_names_what_was_called_and_how_to_list_it() -> None:
    with pytest.raises(AccessDenied) as info:
        authorize_component(OPERATOR, Kind.RESOURCE, "hydra://x/{id}", "hydra://x/1")
    assert info.value.message == "resource 'hydra://x/1': not in Hydra's authority table, so nobody may call it"
    assert info.value.hint == "add a row to hydra_sandbox.authority.COMPONENTS"
    with pytest.raises(AccessDenied) as info:
        authorize_component(Agent(session_id="a"), Kind.RESOURCE, "hydra://status", "hydra://status")
    assert info.value.message == "hydra://status: agent session a may not read the server's status"
    assert (info.value.hint or "").startswith("only the operator can")
    row = authorize_component(Agent(session_id="a"), Kind.TOOL, "get_diff", "get_diff")
    assert row == component(Kind.TOOL, "get_diff") and row.action == Action.READ
    assert authorize_component(OPERATOR, Kind.PROMPT, PROFILE_PROMPTS, "coder").action == Action.PROMPT


def test_only_prompts_tagged_as_profiles_share_the_profile_row() -> None:
    assert component_key(Kind.TOOL, "spawn_agent", {"profile"}) == "spawn_agent"
    assert component_key(Kind.RESOURCE, "hydra://status", {"profile"}) == "hydra://status"
    assert component_key(Kind.PROMPT, "coder", {"other", "profile"}) == PROFILE_PROMPTS
    assert component_key(Kind.PROMPT, "coder", {"other"}) == "coder"


def test_a_resource_template_matches_one_whole_segment_only() -> None:
    tree = resource_for("hydra://sessions/s-1/tree")
    assert tree is not None and tree.key == "hydra://sessions/{session_id}/tree"
    checklist = resource_for("hydra://checklists/s-1")
    assert checklist is not None and checklist.key == "hydra://checklists/{session_id}"
    for uri in ("hydra://sessions/", "hydra://sessions/s-1/", "xhydra://sessions/s-1", "hydra://sessions/s-1/treex"):
        assert resource_for(uri) is None, uri
    assert resource_for("hydra://sessions/{session_id}") == component(Kind.RESOURCE, "hydra://sessions/{session_id}")
    assert component(Kind.TOOL, "hydra://status") is None


def test_the_agent_surface_of_each_kind_holds_only_that_kind() -> None:
    assert agent_components(Kind.RESOURCE) == {
        "hydra://profiles",
        "hydra://policies",
        "hydra://sessions/{session_id}",
        "hydra://checklists/{session_id}",
        "hydra://sessions/{session_id}/tree",
    }


def test_a_uri_template_becomes_a_pattern_of_literal_text_and_one_segment_per_placeholder() -> None:
    from hydra_sandbox.authority import _template

    pattern = _template("hydra://a.b/{first}/x+y/{second}")
    assert pattern.fullmatch("hydra://a.b/1/x+y/two")
    assert not pattern.fullmatch("hydra://aXb/1/x+y/two"), "literal text is escaped"
    assert not pattern.fullmatch("hydra://a.b/1/2/x+y/two"), "a placeholder is one segment"
    assert not pattern.fullmatch("hydra://a.b//x+y/two"), "a placeholder is never empty"
    assert _template("hydra://status").fullmatch("hydra://status")
