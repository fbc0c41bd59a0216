"""Live updates: what changes when a session appears or moves, and who is told, on both MCP generations.

One :class:`LiveUpdates` hub per server process observes the manager (:meth:`AgentManager.observe`)
and turns each change into MCP change events, each tagged with the session whose visibility decides
who may receive it:

- a **transition** of session S: ``hydra://sessions/S`` and ``hydra://checklists/S`` updated, and the
  tree ``hydra://sessions/X/tree`` of S and of each of its ancestors X;
- a **new** session S: the resource list changed, its parent's ``hydra://sessions/P`` updated (its
  children changed) and the trees of S's ancestors.

Delivery:

- **2026-07-28** clients listen (``subscriptions/listen``): each stream reads a per-principal view of
  the hub's bus (:meth:`LiveUpdates.view`), so an agent's stream never carries an event about a session
  outside its subtree (not even a list change), whatever it asked for.
- **2025-era** clients subscribe (``resources/subscribe``) or spawn: their connection gets
  ``notifications/resources/updated`` for those URIs (and ``notifications/resources/list_changed`` when
  a session they may see appears), sent by one pump task so a slow client never blocks a transition.

The protocol handlers (who is asking, may they) live in :mod:`.live_handlers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import anyio
from mcp.server.connection import Connection
from mcp.server.session import ServerSession
from mcp.server.subscriptions import ListenHandler, ResourcesListChanged, ResourceUpdated, ServerEvent
from mcp_types import ResourceListChangedNotification, ResourceUpdatedNotification, ResourceUpdatedNotificationParams
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from hydra_sandbox.authority import Principal, SessionTree, visible
from hydra_sandbox.errors import HydraError, LimitExceededError
from hydra_sandbox.orchestration.manager import AgentManager
from hydra_sandbox.orchestration.observers import SessionChange
from hydra_sandbox.orchestration.registry import SessionRegistry

log = logging.getLogger(__name__)

MAX_LISTEN_STREAMS = 256
"""Open ``subscriptions/listen`` streams per server process; further listens are refused."""
MAX_STREAM_BACKLOG = 256
"""Events buffered per listen stream; a stream whose client stopped reading is ended (it re-listens)."""
MAX_SUBSCRIPTIONS = 1024
"""URIs one 2025-era connection may subscribe to."""
MAX_PENDING = 4096
"""Events waiting for the 2025-era pump; past it the oldest are dropped (they are level triggers)."""
SEND_TIMEOUT_S = 5.0
"""How long one 2025-era notification may take before that connection is skipped for this event."""


def session_uri(session_id: str) -> str:
    return f"hydra://sessions/{session_id}"


def tree_uri(session_id: str) -> str:
    return f"hydra://sessions/{session_id}/tree"


def checklist_uri(session_id: str) -> str:
    return f"hydra://checklists/{session_id}"


@dataclass(frozen=True)
class Tagged:
    """A change event and the session that decides who may see it."""

    event: ServerEvent
    session_id: str


def events_for(change: SessionChange, ancestors: list[str]) -> list[Tagged]:
    """The events one change publishes (``ancestors``: the session's parents, nearest first)."""
    sid = change.record.session_id
    trees = [Tagged(ResourceUpdated(tree_uri(x)), x) for x in [sid, *ancestors]]
    if not change.created:
        own = [Tagged(ResourceUpdated(session_uri(sid)), sid), Tagged(ResourceUpdated(checklist_uri(sid)), sid)]
        return own + trees
    parent = change.record.parent_session_id
    appeared = [Tagged(ResourcesListChanged(), sid)]
    if parent is not None:
        appeared.append(Tagged(ResourceUpdated(session_uri(parent)), parent))
    return appeared + trees


def connection_of(session: ServerSession) -> Connection:
    """The client connection a request's session belongs to. The SDK builds a ``ServerSession`` per
    request; the ``Connection`` behind it lives as long as the client is connected, and its
    ``outbound`` is the channel a 2025-era client's notifications travel on (the SDK has no public
    accessor for it: the one place Hydra reads it)."""
    return session._connection


@dataclass
class _Subscriptions:
    """A 2025-era connection's subscriptions."""

    principal: Principal
    uris: set[str] = field(default_factory=set)


class _PrincipalView:
    """The hub's bus as one principal may see it (a :class:`mcp.server.subscriptions.SubscriptionBus`)."""

    def __init__(self, hub: LiveUpdates, principal: Principal) -> None:
        self._hub = hub
        self._principal = principal

    async def publish(self, event: ServerEvent) -> None:
        raise HydraError("a listen stream's view of the live updates cannot publish", hint="publish on the hub")

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        principal = self._principal

        def deliver(tagged: Tagged, tree: SessionTree) -> None:
            if visible(principal, tagged.session_id, tree):
                listener(tagged.event)

        return self._hub.add_listener(deliver)


class LiveUpdates:
    """The hub: observes the manager, fans events out to listen streams and 2025-era connections."""

    def __init__(self) -> None:
        self._listeners: dict[object, Callable[[Tagged, SessionTree], None]] = {}
        self._handlers: set[ListenHandler] = set()
        self._legacy: weakref.WeakKeyDictionary[Connection, _Subscriptions] = weakref.WeakKeyDictionary()
        self._pending: asyncio.Queue[Tagged] = asyncio.Queue(MAX_PENDING)
        self._tree: SessionRegistry | None = None
        self._stop_observing: Callable[[], None] | None = None
        self._pump: asyncio.Task[None] | None = None
        self.on_created: Callable[[str], None] | None = None
        """Called with each new session's id while its spawn request runs (see :mod:`.live_handlers`)."""

    @property
    def listening(self) -> int:
        """Listen streams open now."""
        return len(self._handlers)

    # -- the manager's side --------------------------------------------------------------------

    def attach(self, manager: AgentManager) -> None:
        """Start observing ``manager`` (the server's lifespan, once its services are open)."""
        self._tree = manager.sessions
        self._stop_observing = manager.observe(self._on_change)
        self._pump = asyncio.create_task(self._deliver_legacy(), name="hydra-live-updates")

    async def detach(self) -> None:
        """Stop observing; open listen streams end gracefully (their clients see the stream close)."""
        if self._stop_observing is not None:
            self._stop_observing()
            self._stop_observing = None
        for handler in list(self._handlers):
            handler.close()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
            self._pump = None
        self._legacy.clear()
        self._tree = None

    def _on_change(self, change: SessionChange) -> None:
        tree = self._tree
        if tree is None:
            return
        ancestors = tree.ancestors(change.record.session_id)
        if change.created and self.on_created is not None:
            self.on_created(change.record.session_id)
        for tagged in events_for(change, ancestors):
            for listener in list(self._listeners.values()):
                listener(tagged, tree)
            if self._legacy:
                self._enqueue(tagged)

    def _enqueue(self, tagged: Tagged) -> None:
        if self._pending.full():
            self._pending.get_nowait()
            log.warning("live updates: 2025-era backlog full; the oldest event was dropped")
        self._pending.put_nowait(tagged)

    # -- 2026-07-28: listen streams --------------------------------------------------------------

    def add_listener(self, listener: Callable[[Tagged, SessionTree], None]) -> Callable[[], None]:
        token = object()
        self._listeners[token] = listener

        def remove() -> None:
            self._listeners.pop(token, None)

        return remove

    def view(self, principal: Principal) -> _PrincipalView:
        """The bus a listen stream of ``principal`` reads: only events about sessions it may see."""
        return _PrincipalView(self, principal)

    def check_capacity(self) -> None:
        """Refuse a new listen stream past :data:`MAX_LISTEN_STREAMS`."""
        if len(self._handlers) >= MAX_LISTEN_STREAMS:
            raise LimitExceededError(
                f"subscriptions/listen: {MAX_LISTEN_STREAMS} streams are open, the most this server serves",
                hint="close a stream you no longer read, then listen again",
            )

    @contextlib.asynccontextmanager
    async def listen_stream(self, principal: Principal) -> AsyncIterator[ListenHandler]:
        """A listen handler for one stream of ``principal`` (call :meth:`check_capacity` first)."""
        handler = ListenHandler(self.view(principal), max_subscriptions=1, max_buffered_events=MAX_STREAM_BACKLOG)
        self._handlers.add(handler)
        try:
            yield handler
        finally:
            self._handlers.discard(handler)

    # -- 2025-era: resources/subscribe and spawned sessions ---------------------------------------

    def subscribe(self, session: ServerSession, principal: Principal, uri: str) -> None:
        """Send ``session`` (a 2025-era connection) an update whenever ``uri`` changes. Authorize first."""
        connection = self._legacy.setdefault(connection_of(session), _Subscriptions(principal))
        if uri not in connection.uris and len(connection.uris) >= MAX_SUBSCRIPTIONS:
            raise LimitExceededError(
                f"resources/subscribe: {uri} would be subscription {MAX_SUBSCRIPTIONS + 1} of this connection",
                hint=f"at most {MAX_SUBSCRIPTIONS}; unsubscribe from finished sessions first",
            )
        connection.uris.add(uri)

    def unsubscribe(self, session: ServerSession, uri: str) -> None:
        connection = self._legacy.get(connection_of(session))
        if connection is not None:
            connection.uris.discard(uri)

    @staticmethod
    def is_legacy(session: ServerSession) -> bool:
        """Whether ``session`` speaks a 2025-era protocol (change notifications travel on it directly)."""
        return session.protocol_version not in MODERN_PROTOCOL_VERSIONS

    async def _deliver_legacy(self) -> None:
        while True:
            tagged = await self._pending.get()
            tree = self._tree
            if tree is None:
                continue
            for connection, subscriptions in list(self._legacy.items()):
                if visible(subscriptions.principal, tagged.session_id, tree):
                    await self._send(connection, subscriptions, tagged.event)

    async def _send(self, connection: Connection, subscriptions: _Subscriptions, event: ServerEvent) -> None:
        if isinstance(event, ResourceUpdated):
            if event.uri not in subscriptions.uris:
                return
            notification: ResourceUpdatedNotification | ResourceListChangedNotification = ResourceUpdatedNotification(
                params=ResourceUpdatedNotificationParams(uri=event.uri)
            )
        elif isinstance(event, ResourcesListChanged):
            notification = ResourceListChangedNotification()
        else:
            return
        wire = notification.model_dump(by_alias=True, mode="json", exclude_none=True)
        try:
            with anyio.move_on_after(SEND_TIMEOUT_S):
                await connection.outbound.notify(wire["method"], wire.get("params"))
        except Exception as exc:  # fan-out boundary: a closed or broken connection is dropped, never raised
            log.info("live updates: a 2025-era connection is gone (%s); its subscriptions dropped", type(exc).__name__)
            self._legacy.pop(connection, None)
