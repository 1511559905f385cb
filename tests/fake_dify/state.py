"""Central Dify's rows, in memory: keys, apps, end users, annotations, conversations and workflow runs.

Pure Python and thread-safe (one re-entrant lock shared with the knowledge store), because a test
mutates central from its own thread while a live fake serves the agent from uvicorn's thread.
Given a seed, ids and keys are deterministic; with a fixed clock, so are the timestamps.
"""

from __future__ import annotations

import functools
import random
import string
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, ParamSpec, TypeVar

from tests.fake_dify.errors import NotFound

P = ParamSpec("P")
R = TypeVar("R")
AppMode = Literal["chat", "advanced-chat", "workflow"]
CHAT_MODES = ("chat", "advanced-chat")
DEFAULT_USER = "DEFAULT-USER"
_ALNUM = string.ascii_letters + string.digits


def locked(method: Callable[P, R]) -> Callable[P, R]:
    """Run a store method under its shared lock: the agent's requests and the test's edits interleave."""

    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with args[0].lock:  # type: ignore[attr-defined]
            return method(*args, **kwargs)

    return wrapper


@dataclass
class Clock:
    """Server time. `start=None` follows the wall clock; a number makes time stand still until advanced.

    `skew` shifts every timestamp the server writes or reports (the `Date` header too): clock skew.
    """

    start: float | None = None
    offset: float = 0.0
    skew: float = 0.0

    def now(self) -> float:
        base = time.time() if self.start is None else self.start
        return base + self.offset + self.skew

    def ts(self) -> int:
        return int(self.now())

    def advance(self, seconds: float) -> None:
        self.offset += seconds


class Ids:
    """UUIDs and keys from one seeded generator, so a seeded run hands out the same ids every time."""

    def __init__(self, seed: int | None) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def uuid(self) -> str:
        with self._lock:
            return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def token(self, prefix: str) -> str:
        with self._lock:
            return prefix + "".join(self._rng.choice(_ALNUM) for _ in range(24))

    def digits(self, count: int) -> str:
        with self._lock:
            return "".join(self._rng.choice(string.digits) for _ in range(count))


@dataclass
class ApiKey:
    """One API token row: `app-…` bound to one app, or `dataset-…` for the workspace (or bound datasets)."""

    id: str
    token: str
    kind: Literal["app", "dataset"]
    app_id: str | None = None
    dataset_ids: frozenset[str] | None = None  # None: every dataset of the workspace
    revoked: bool = False


@dataclass
class App:
    id: str
    name: str
    mode: AppMode
    created_at: int
    description: str = ""
    api_enabled: bool = True
    status: str = "normal"  # anything else: "The app's status is abnormal."
    opening_statement: str = ""
    suggested_questions: list[str] = field(default_factory=list)
    user_input_form: list[dict[str, Any]] = field(default_factory=list)
    annotation_reply_enabled: bool = False
    retriever_resource_enabled: bool = True
    dataset_ids: list[str] = field(default_factory=list)  # knowledge the chat app retrieves from
    answers: dict[str, str] = field(default_factory=dict)  # scripted answers, by exact query
    workflow_id: str = ""
    workflow_outputs: dict[str, Any] = field(default_factory=lambda: {"result": "ok"})


@dataclass
class EndUser:
    id: str
    app_id: str
    session_id: str
    created_at: int

    @property
    def is_anonymous(self) -> bool:
        return self.session_id == DEFAULT_USER


@dataclass
class Annotation:
    id: str
    app_id: str
    question: str
    answer: str
    created_at: int
    seq: int
    hit_count: int = 0


@dataclass
class Conversation:
    id: str
    app_id: str
    end_user_id: str
    inputs: dict[str, Any]
    introduction: str
    created_at: int
    updated_at: int
    seq: int
    name: str = "New conversation"
    status: str = "normal"


@dataclass
class Message:
    id: str
    app_id: str
    conversation_id: str
    end_user_id: str
    query: str
    inputs: dict[str, Any]
    created_at: int
    seq: int
    parent_message_id: str | None = None
    answer: str = ""
    status: str = "normal"  # "error" when the stream failed mid-way
    error: str | None = None
    retriever_resources: list[dict[str, Any]] = field(default_factory=list)
    annotation_id: str | None = None
    feedback: dict[str, Any] | None = None


@dataclass
class WorkflowRun:
    id: str
    app_id: str
    workflow_id: str
    end_user_id: str | None  # None: started by an account (the console), not through the Service API
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    created_at: int
    finished_at: int | None
    log_id: str
    seq: int
    status: str = "succeeded"
    error: str | None = None
    elapsed_time: float = 0.05
    total_steps: int = 2
    total_tokens: int = 0
    account_id: str | None = None  # the account that started it, when it was not an end user
    # Real time (time.monotonic), so threads and processes see it move: when the run stops `running`,
    # and when it first shows in the logs (a central slow to list new runs). 0: at once.
    finishes_at: float = 0.0
    listed_at: float = 0.0

    def listed(self) -> bool:
        return time.monotonic() >= self.listed_at


class FakeDifyState:
    """Everything central Dify knows, plus the knowledge store (`state.knowledge`)."""

    def __init__(self, *, seed: int | None = 0, clock: Clock | None = None, server_version: str = "1.9.2") -> None:
        from tests.fake_dify.knowledge import KnowledgeStore  # the two stores share ids, clock and lock

        self.lock = threading.RLock()
        self.ids = Ids(seed)
        self.clock = clock if clock is not None else Clock(start=1_767_225_600.0)  # 2026-01-01, fixed
        self.server_version = server_version
        self.owner_id = self.ids.uuid()
        self.owner_name = "admin"
        self.owner_email = "admin@example.com"
        self.keys: dict[str, ApiKey] = {}  # by token
        self.apps: dict[str, App] = {}
        self.end_users: dict[str, EndUser] = {}
        self.annotations: dict[str, Annotation] = {}
        self.conversations: dict[str, Conversation] = {}
        self.messages: dict[str, Message] = {}
        self.workflow_runs: dict[str, WorkflowRun] = {}
        self.annotation_jobs: dict[str, dict[str, Any]] = {}  # annotation-reply enable/disable jobs
        self.knowledge = KnowledgeStore(self)
        self._seq = 0

    def next_seq(self) -> int:
        """A tie-breaker for rows written in the same second, so orderings are stable."""
        self._seq += 1
        return self._seq

    # --- keys and apps ----------------------------------------------------------------------------

    @locked
    def add_app(self, name: str, mode: AppMode = "chat", **settings: Any) -> tuple[App, str]:
        """A new app and its first app key (the key is returned: it is what the agent is configured with)."""
        app = App(id=self.ids.uuid(), name=name, mode=mode, created_at=self.clock.ts(), **settings)
        if mode != "chat" and not app.workflow_id:
            app.workflow_id = self.ids.uuid()
        self.apps[app.id] = app
        return app, self.add_app_key(app.id)

    @locked
    def add_app_key(self, app_id: str) -> str:
        token = self.ids.token("app-")
        self.keys[token] = ApiKey(id=self.ids.uuid(), token=token, kind="app", app_id=app_id)
        return token

    @locked
    def add_dataset_key(self, dataset_ids: list[str] | None = None) -> str:
        token = self.ids.token("dataset-")
        bound = None if dataset_ids is None else frozenset(dataset_ids)
        self.keys[token] = ApiKey(id=self.ids.uuid(), token=token, kind="dataset", dataset_ids=bound)
        return token

    @locked
    def revoke_key(self, token: str) -> None:
        """The key is deleted centrally: from now on it is 'Access token is invalid'."""
        self.keys[token].revoked = True

    @locked
    def set_app_api(self, app_id: str, enabled: bool) -> None:
        self.app(app_id).api_enabled = enabled

    def app(self, app_id: str) -> App:
        if app_id not in self.apps:
            raise NotFound("App not found.")
        return self.apps[app_id]

    @locked
    def end_user(self, app_id: str, session_id: str | None) -> EndUser:
        """Get or create the end user keyed by (app, `user`), as `EndUserService` does; blank means DEFAULT-USER."""
        session_id = session_id or DEFAULT_USER
        for user in self.end_users.values():
            if user.app_id == app_id and user.session_id == session_id:
                return user
        user = EndUser(id=self.ids.uuid(), app_id=app_id, session_id=session_id, created_at=self.clock.ts())
        self.end_users[user.id] = user
        return user

    # --- annotations ------------------------------------------------------------------------------

    @locked
    def add_annotation(self, app_id: str, question: str, answer: str) -> Annotation:
        """Never deduplicated, like Dify: a retried create makes a second row."""
        row = Annotation(self.ids.uuid(), app_id, question, answer, self.clock.ts(), self.next_seq())
        self.annotations[row.id] = row
        return row

    @locked
    def update_annotation(self, annotation_id: str, question: str, answer: str) -> Annotation:
        row = self.annotation(annotation_id)
        row.question, row.answer = question, answer
        return row

    @locked
    def delete_annotation(self, annotation_id: str) -> None:
        del self.annotations[self.annotation(annotation_id).id]

    def annotation(self, annotation_id: str, app_id: str | None = None) -> Annotation:
        row = self.annotations.get(annotation_id)
        if row is None or (app_id is not None and row.app_id != app_id):
            raise NotFound("Annotation not found")
        return row

    @locked
    def list_annotations(self, app_id: str, keyword: str = "") -> list[Annotation]:
        """Newest first; the keyword matches question or answer, case-insensitively."""
        needle = keyword.lower()
        rows = [
            a
            for a in self.annotations.values()
            if a.app_id == app_id and (needle in a.question.lower() or needle in a.answer.lower())
        ]
        return sorted(rows, key=lambda a: (a.created_at, a.seq), reverse=True)

    # --- conversations and messages ---------------------------------------------------------------

    @locked
    def start_message(
        self, app: App, user: EndUser, query: str, inputs: dict[str, Any], conversation: Conversation | None
    ) -> tuple[Conversation, Message]:
        """Commit the conversation and message rows *before* any answer exists, as Dify does."""
        now = self.clock.ts()
        if conversation is None:
            conversation = Conversation(
                id=self.ids.uuid(),
                app_id=app.id,
                end_user_id=user.id,
                inputs=inputs,
                introduction=app.opening_statement,
                created_at=now,
                updated_at=now,
                seq=self.next_seq(),
            )
            self.conversations[conversation.id] = conversation
        previous = self.messages_of(conversation.id)
        message = Message(
            id=self.ids.uuid(),
            app_id=app.id,
            conversation_id=conversation.id,
            end_user_id=user.id,
            query=query,
            inputs=conversation.inputs,  # frozen at turn 1
            created_at=now,
            seq=self.next_seq(),
            parent_message_id=previous[-1].id if previous else None,
        )
        self.messages[message.id] = message
        conversation.updated_at = now
        return conversation, message

    @locked
    def conversation(self, conversation_id: str, app_id: str, end_user_id: str) -> Conversation:
        row = self.conversations.get(conversation_id)
        if row is None or row.app_id != app_id or row.end_user_id != end_user_id or row.status != "normal":
            raise NotFound("Conversation Not Exists.")
        return row

    @locked
    def delete_conversation(self, conversation_id: str) -> None:
        self.conversations.pop(conversation_id)
        for message_id in [m.id for m in self.messages.values() if m.conversation_id == conversation_id]:
            del self.messages[message_id]

    @locked
    def chat_queries(self, conversation_id: str | None = None) -> Any:
        """The queries a conversation received, in order; with no id, {conversation_id: [queries]} for all."""
        if conversation_id is not None:
            return [m.query for m in self.messages_of(conversation_id)]
        return {c: [m.query for m in self.messages_of(c)] for c in self.conversations}

    @locked
    def messages_of(self, conversation_id: str) -> list[Message]:
        rows = [m for m in self.messages.values() if m.conversation_id == conversation_id]
        return sorted(rows, key=lambda m: (m.created_at, m.seq))

    @locked
    def conversations_of(self, app_id: str, end_user_id: str) -> list[Conversation]:
        return [c for c in self.conversations.values() if c.app_id == app_id and c.end_user_id == end_user_id]

    # --- workflow runs ----------------------------------------------------------------------------

    @locked
    def record_workflow_run(
        self,
        app: App,
        user: EndUser | None,
        inputs: dict[str, Any],
        *,
        running_s: float = 0.0,
        list_delay_s: float = 0.0,
    ) -> WorkflowRun:
        """One run and its log row; never deduplicated (look up by end-user session id first). `user` None: an
        account (the workspace owner) started it. It stays `running` for `running_s` real seconds and is
        missing from the logs for `list_delay_s`."""
        now, started = self.clock.ts(), time.monotonic()
        run = WorkflowRun(
            id=self.ids.uuid(),
            app_id=app.id,
            workflow_id=app.workflow_id,
            end_user_id=user.id if user is not None else None,
            account_id=self.owner_id if user is None else None,
            inputs=inputs,
            outputs=dict(app.workflow_outputs),
            created_at=now,
            finished_at=now if running_s <= 0 else None,
            log_id=self.ids.uuid(),
            seq=self.next_seq(),
            status="succeeded" if running_s <= 0 else "running",
            finishes_at=started + running_s if running_s > 0 else 0.0,
            listed_at=started + list_delay_s if list_delay_s > 0 else 0.0,
        )
        self.workflow_runs[run.id] = run
        return run

    @locked
    def finish_runs(self) -> None:
        """Runs whose time is up leave `running` as `succeeded` (called before anything reads them)."""
        now = time.monotonic()
        for run in self.workflow_runs.values():
            if run.status == "running" and run.finishes_at and now >= run.finishes_at:
                run.status, run.finished_at = "succeeded", self.clock.ts()

    def session_of(self, run: WorkflowRun) -> str | None:
        """The end user's session id (Dify's `user`) of a run; None for a run an account started."""
        return self.end_users[run.end_user_id].session_id if run.end_user_id else None

    @locked
    def runs_of(self, app_id: str) -> list[WorkflowRun]:
        self.finish_runs()
        rows = [r for r in self.workflow_runs.values() if r.app_id == app_id]
        return sorted(rows, key=lambda r: (r.created_at, r.seq), reverse=True)

    # --- the control API's view -------------------------------------------------------------------

    @locked
    def summary(self) -> dict[str, Any]:
        """What a demo or a test wants to see at a glance (tokens included: this is a fake)."""
        return {
            "now": self.clock.ts(),
            "keys": [
                {"id": k.id, "token": k.token, "kind": k.kind, "app_id": k.app_id, "revoked": k.revoked}
                for k in self.keys.values()
            ],
            "apps": [
                {"id": a.id, "name": a.name, "mode": a.mode, "api_enabled": a.api_enabled} for a in self.apps.values()
            ],
            "datasets": self.knowledge.summary(),
            "annotations": len(self.annotations),
            "conversations": len(self.conversations),
            "messages": len(self.messages),
            "workflow_runs": len(self.workflow_runs),
        }
