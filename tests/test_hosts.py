"""Several model hosts (issue 14): `hosts` commands, a queue and an evaluation spread over
two fake servers, one of them dying half-way, `classify --host NAME` against an
OpenAI-compatible server, hosts with other weights left out, the pool's choice of host."""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from pathlib import Path

import pytest

from safeguard_desktop.hosts import HostConfig
from safeguard_desktop.services.batch_runner import Backoff
from safeguard_desktop.services.hosts import HostPool, PoolHost
from tests.cli_helpers import cli, cli_json, reset_data_dir  # noqa: F401 (fixture)
from tests.fake_ollama import FakeOllama, Scenario
from tests.fake_openai import FakeOpenAI

MODEL = "gpt-oss-safeguard:20b"


def jsonl(path: Path, count: int) -> Path:
    path.write_text(
        "".join(json.dumps({"id": f"r{i}", "text": f"report number {i}"}) + "\n"
                for i in range(1, count + 1)),
        encoding="utf-8",
    )  # fmt: skip
    return path


def use_local(capsys: pytest.CaptureFixture[str], data: Path, url: str) -> None:
    """Point the local host (the host setting) at a fake, as the Settings dialog would."""
    data.mkdir(parents=True, exist_ok=True)
    settings = data / "settings.json"
    current = json.loads(settings.read_text()) if settings.exists() else {}
    settings.write_text(json.dumps({**current, "host": url}), encoding="utf-8")


# --- the hosts commands -------------------------------------------------------------------------


def test_hosts_add_list_disable_remove_with_health(capsys, tmp_path: Path) -> None:
    data = tmp_path / "d"
    with FakeOllama() as local, FakeOllama(models=("qwen3:8b",)) as other, FakeOpenAI() as vllm:
        use_local(capsys, data, local.url)
        code, out, err = cli(capsys, data, "hosts", "add", "gpu2", other.url, "--slots", "2")
        assert code == 0, err
        assert "Added host gpu2: ollama" in out and "2 slot(s)" in out
        code, out, err = cli(capsys, data, "hosts", "add", "vllm", vllm.url + "/v1",
                             "--model", "openai/gpt-oss-safeguard-20b", "--slots", "4")  # fmt: skip
        assert code == 0, err and "openai" in out  # kind from the /v1 address
        listed = {h["name"]: h for h in cli_json(capsys, data, "hosts", "list")}
        assert list(listed) == ["local", "gpu2", "vllm"]
        assert listed["local"]["healthy"] and listed["local"]["has_model"]
        assert listed["local"]["mark"] is None and listed["local"]["digest"]
        assert listed["gpu2"]["healthy"] and listed["gpu2"]["has_model"] is False
        assert "has no model named gpt-oss-safeguard:20b" in listed["gpu2"]["mark"]
        assert listed["vllm"]["kind"] == "openai" and listed["vllm"]["has_model"]
        assert listed["vllm"]["slots"] == 4 and listed["vllm"]["mark"] is None
        code, out, _ = cli(capsys, data, "hosts", "list")
        assert "NOT USED" in out and "gpu2" in out  # the human table says it too

        assert cli(capsys, data, "hosts", "disable", "local")[0] == 0
        assert cli_json(capsys, data, "hosts", "list")[0]["enabled"] is False
        code, _, err = cli(capsys, data, "hosts", "remove", "local")
        assert code == 2 and "disable it instead" in err
        code, _, err = cli(capsys, data, "hosts", "add", "gpu2", "http://127.0.0.1:3")
        assert code == 2 and "already a host named 'gpu2'" in err
        code, _, err = cli(capsys, data, "hosts", "add", "bad name", other.url)
        assert code == 2 and "cannot be used" in err
        for args, says in (
            (["LOCAL", "http://127.0.0.1:1"], "the managed local Ollama"),
            (["x", "http://"], "names no machine"),
            (["x", other.url], "Host gpu2 already has the address"),
            (["x", local.url], "Host local already has the address"),
            (["x", "http://127.0.0.1:2/v1", "--kind", "ollama"], "use --kind openai"),
        ):
            code, _, err = cli(capsys, data, "hosts", "add", *args)
            assert code == 2 and says in err, (args, err)
        assert cli(capsys, data, "hosts", "remove", "gpu2")[0] == 0
        assert [h["name"] for h in cli_json(capsys, data, "hosts", "list")] == ["local", "vllm"]
    # Nothing of the hosts' tokens or state in the settings file
    assert "gpu2" not in (data / "settings.json").read_text()


def test_a_down_host_is_listed_down_and_a_test_says_how_long_it_took(
    capsys, tmp_path: Path
) -> None:
    data = tmp_path / "d"
    with FakeOllama(token_rate=50_000) as local:
        use_local(capsys, data, local.url)
        assert cli(capsys, data, "hosts", "add", "gone", "http://127.0.0.1:9")[0] == 0
        listed = {h["name"]: h for h in cli_json(capsys, data, "hosts", "list")}
        assert listed["gone"]["healthy"] is False and listed["gone"]["problem"]
        code, out, err = cli(capsys, data, "hosts", "test", "local")
        assert code == 0, err
        assert out.startswith("Host local (") and "answered in" in out and " s with " in out
        result = cli_json(capsys, data, "hosts", "test", "local")
        assert result["status"] == "done" and result["seconds"] > 0
        code, out, _ = cli(capsys, data, "hosts", "test", "gone")
        assert code == 1 and "gone" in out


def test_classify_on_a_named_openai_compatible_host_prints_verdict_and_reasoning(
    capsys, tmp_path: Path
) -> None:
    data = tmp_path / "d"
    with FakeOpenAI(flavor="llama.cpp", token_rate=50_000) as server:
        code, _, err = cli(capsys, data, "hosts", "add", "llama", server.url + "/v1",
                           "--model", "openai/gpt-oss-safeguard-20b")  # fmt: skip
        assert code == 0, err
        code, out, err = cli(capsys, data, "classify", "--host", "llama", "--policy",
                             "harassment", "--text", "you are an idiot", "--json")  # fmt: skip
        assert code in (0, 3), err
        result = json.loads(out)
        assert result["reasoning"]
        assert server.chat_bodies[0]["model"] == "openai/gpt-oss-safeguard-20b"
        history = cli_json(capsys, data, "history", "list")
        shown = cli_json(capsys, data, "history", "show", str(history[0]["id"]))
    assert shown["backend"] == "openai" and shown["host"].endswith("/v1")
    assert shown["served_model"] == "openai/gpt-oss-safeguard-20b"


# --- a queue over two hosts ---------------------------------------------------------------------


class DieAfter:
    """Script a fake host: `normal` quick answers, then streams that stall; once `stalled`
    of them stall, `dying` is set (the test then stops the server: it dies mid-stream)."""

    def __init__(self, fake: FakeOllama, normal: int, stalled: int) -> None:
        fake.script(*(Scenario(thinking="Ordinary.", content="0") for _ in range(normal)))
        fake.script(*(Scenario(thinking="It is a long", stall_after=3) for _ in range(500)))
        self.dying = threading.Event()
        self._left = stalled
        self._lock = threading.Lock()
        original = fake.next_scenario

        def counting(model: str) -> Scenario | None:
            scenario = original(model)
            if scenario is not None and scenario.stall_after is not None:
                with self._lock:
                    self._left -= 1
                    if self._left == 0:
                        self.dying.set()
            return scenario

        fake.next_scenario = counting  # type: ignore[method-assign]


def test_a_queue_spreads_over_two_hosts_and_survives_one_dying(capsys, tmp_path: Path) -> None:
    """The README's walk-through: two hosts, a queue over both, one killed half-way: every
    item classified exactly once, each with the host that judged it."""
    data = tmp_path / "d"
    items = jsonl(tmp_path / "reports.jsonl", 40)
    with FakeOllama(token_rate=50_000, parallel=2) as local, \
            FakeOllama(token_rate=50_000, parallel=2) as gpu2:  # fmt: skip
        use_local(capsys, data, local.url)
        assert cli(capsys, data, "hosts", "add", "gpu2", gpu2.url, "--slots", "2")[0] == 0
        assert cli(capsys, data, "queue", "create", "q", "--from", str(items),
                   "--policy", "harassment")[0] == 0  # fmt: skip
        script = DieAfter(gpu2, normal=5, stalled=2)
        killer = threading.Thread(target=lambda: script.dying.wait(60) and gpu2.stop())
        killer.start()
        try:
            code, out, err = cli(capsys, data, "queue", "run", "q", "--parallel", "2")
        finally:
            script.dying.set()
            killer.join(60)
        assert code == 0, err
        assert "40 of 40 items classified, 0 failed" in out
        assert "Reviews by host: local 35, gpu2 5." in out
        assert f"Host gpu2 ({gpu2.url}) stopped answering" in err
        served_by_gpu2 = len(gpu2.requests_to("/api/chat"))
    rows = cli_json(capsys, data, "queue", "items", "q")
    hosts = Counter(v["host"] for r in rows for v in r["verdicts"])
    assert {r["state"] for r in rows} == {"classified"}
    assert hosts[gpu2.url] == 5 and hosts[local.url] == 35  # the stalled two ran on local
    assert served_by_gpu2 == 7
    history = cli_json(capsys, data, "history", "list", "--limit", "100")
    assert len(history) == 40 and {h["status"] for h in history} == {"done"}
    review_ids = [v["review_id"] for r in rows for v in r["verdicts"]]
    assert len(set(review_ids)) == 40  # none recorded twice
    shown = cli_json(capsys, data, "history", "show", str(review_ids[0]))
    assert shown["backend"] == "ollama" and shown["served_model"] == MODEL


def test_a_queue_named_hosts_only_and_a_host_with_other_weights_is_left_out(
    capsys, tmp_path: Path
) -> None:
    data = tmp_path / "d"
    items = jsonl(tmp_path / "reports.jsonl", 6)
    with FakeOllama(token_rate=50_000) as local, FakeOllama(token_rate=50_000) as a, \
            FakeOllama(token_rate=50_000, models=()) as b:  # fmt: skip
        b.add_model(MODEL, digest="sha256:" + "b" * 64)  # same name, other weights
        use_local(capsys, data, local.url)
        assert cli(capsys, data, "hosts", "add", "a", a.url)[0] == 0
        assert cli(capsys, data, "hosts", "add", "b", b.url)[0] == 0
        assert cli(capsys, data, "queue", "create", "q", "--from", str(items),
                   "--policy", "harassment")[0] == 0  # fmt: skip
        code, out, err = cli(capsys, data, "queue", "run", "q", "--hosts", "a,b")
        assert code == 0, err
        assert "Host b (" in err and "other weights" in err
        assert "6 of 6 items classified" in out
        assert len(a.requests_to("/api/chat")) == 6
        assert not b.requests_to("/api/chat") and not local.requests_to("/api/chat")
        code, _, err = cli(capsys, data, "queue", "run", "q", "--hosts", "nope")
        assert code == 0  # nothing left to do: no host is needed, none is asked
        assert cli(capsys, data, "queue", "create", "r", "--from", str(items),
                   "--policy", "harassment")[0] == 0  # fmt: skip
        code, _, err = cli(capsys, data, "queue", "run", "r", "--hosts", "nope")
        assert code == 2 and "No host named 'nope'" in err


def test_an_evaluation_run_spreads_over_an_ollama_and_an_openai_host(
    capsys, tmp_path: Path
) -> None:
    data = tmp_path / "d"
    labels = tmp_path / "labels.jsonl"
    labels.write_text(
        "".join(json.dumps({"text": f"message {i}", "label": i % 2}) + "\n" for i in range(12)),
        encoding="utf-8",
    )
    with FakeOllama(token_rate=50_000) as local, FakeOpenAI(token_rate=50_000) as vllm:
        use_local(capsys, data, local.url)
        assert cli(capsys, data, "hosts", "add", "vllm", vllm.url + "/v1", "--model",
                   "openai/gpt-oss-safeguard-20b")[0] == 0  # fmt: skip
        code, out, err = cli(capsys, data, "eval", "run", "--policy", "harassment",
                             "--labels", str(labels), "--hosts", "local,vllm",
                             "--json")  # fmt: skip
        assert code == 0, err
        result = json.loads(out)
        on_local = len(local.requests_to("/api/chat"))
        on_vllm = len(vllm.chat_bodies)
    assert on_local + on_vllm == 12 and on_local > 0 and on_vllm > 0
    assert (result["done"], result["failed"], result["pending"]) == (12, 0, 0)
    history = cli_json(capsys, data, "history", "list", "--limit", "100")
    assert len(history) == 12


# --- the pool itself ----------------------------------------------------------------------------


class _Client:
    def __init__(self, url: str) -> None:
        from safeguard_desktop.engine.endpoint import Endpoint

        self.endpoint = Endpoint(url)
        self.kind = "ollama"


class _Reviewer:
    def __init__(self, url: str) -> None:
        self.client = _Client(url)


def pool_of(*slots: int) -> HostPool:
    hosts = [
        PoolHost(HostConfig(f"h{i}", "ollama", f"http://h{i}:1", slots=n),
                 _Reviewer(f"http://h{i}:1"), n)  # type: ignore[arg-type]
        for i, n in enumerate(slots)
    ]  # fmt: skip
    return HostPool(hosts, backoff=Backoff(first=1000.0, jitter=0.0))


def test_the_pool_takes_the_least_loaded_host_up_to_its_slots() -> None:
    async def scenario() -> list[str]:
        pool = pool_of(1, 2)
        taken = [await pool.acquire() for _ in range(3)]
        names = [h.name for h in taken]
        waiting = asyncio.ensure_future(pool.acquire())
        await asyncio.sleep(0)
        assert not waiting.done()  # every slot taken: it waits
        pool.release(taken[0])
        names.append((await waiting).name)
        return names

    assert asyncio.run(scenario()) == ["h0", "h1", "h1", "h0"]


def test_a_host_taken_out_is_skipped_and_none_left_raises_its_error() -> None:
    from safeguard_desktop.engine.errors import ServerUnreachable

    async def scenario() -> None:
        pool = pool_of(1, 1)
        first = pool.hosts[0]
        pool.mark_down(first, ServerUnreachable(first.url))  # backoff of 1000 s
        assert (await pool.acquire()).name == "h1"
        pool.take_out(pool.hosts[1], "no model", ServerUnreachable("http://h1:1"))
        pool.take_out(first, "gone", ServerUnreachable(first.url))
        with pytest.raises(ServerUnreachable):
            await pool.acquire()

    asyncio.run(scenario())
