"""Scale-out faults, each on real processes: Daphne web processes and `manage.py run_worker` workers against the
PostgreSQL test database, a Redis server of the test's own, and a TCP proxy in front of PostgreSQL.

- a worker SIGKILLed in the middle of a batch: its analyses are re-queued after the heartbeat timeout and finished
  by another worker, none lost, none duplicated;
- Redis restarted while clients are connected: the clients reconnect and, by replay from the database, end with
  the complete result;
- PostgreSQL unreachable for a few seconds: pages answer 503 with Retry-After, the worker retries, nothing is
  corrupted;
- clients that stop reading their websocket do not slow down or break the others.

Skipped unless the run points at PostgreSQL and Redis (`.ci/run`'s second pass).
"""
from __future__ import annotations

import asyncio
import socket
import statistics
import time
import uuid

import pytest
from django.conf import settings
from django.db import connection

from predictor import policy
from predictor.models import Analysis
from tests.conftest import make_jpeg
from tests.scaleout_harness import (
    SKIP_REASON,
    AnalysisWatch,
    RedisServer,
    TcpProxy,
    app_environment,
    database_url_of,
    free_port,
    http_status,
    scaleout_services_configured,
    start_web,
    start_worker,
    wait_until,
    watch_analysis,
)

pytestmark = [
    pytest.mark.scaleout,
    pytest.mark.skipif(not scaleout_services_configured(), reason=SKIP_REASON),
]

HEARTBEAT_TIMEOUT_S = 2
STAGES = ["scene", "partitions", "heatmap", "estimate", "cam", "done"]


class Stack:
    """The processes of one test and what they share: data folder, model folder, database URL, Redis."""

    def __init__(self, *, tmp_path, redis: RedisServer, database_url: str):
        self.tmp_path = tmp_path
        self.redis = redis
        self.database_url = database_url
        self.data_dir = tmp_path / "data"
        self.model_dir = tmp_path / "models"
        self.log_dir = tmp_path / "logs"
        self.prefix = f"geoweb-test-{uuid.uuid4().hex[:8]}"
        self.processes = []

    def env(self, *, database_url: str | None = None, **extra: str) -> dict[str, str]:
        return app_environment(
            database_url=database_url or self.database_url, redis_url=self.redis.url, data_dir=self.data_dir,
            model_dir=self.model_dir, secret_key=settings.SECRET_KEY, channel_prefix=self.prefix,
            GEOWEB_WORKER_HEARTBEAT_TIMEOUT=str(HEARTBEAT_TIMEOUT_S), GEOWEB_WORKER_POLL_S="0.5",
            GEOWEB_RATE_WEBSOCKET="100000", GEOWEB_UPLOAD_DAILY_QUOTA="0", **extra)

    def web(self, name: str, **env_overrides) -> tuple[str, object]:
        port = free_port()
        process = start_web(name, port=port, env=self.env(**env_overrides), log_dir=self.log_dir)
        self.processes.append(process)
        return f"http://127.0.0.1:{port}", process

    def worker(self, name: str, *, batch: int = 8, **env_overrides):
        process = start_worker(name, env=self.env(**env_overrides), log_dir=self.log_dir,
                               args=("--batch", str(batch)))
        self.processes.append(process)
        return process

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log_tail()}" for p in self.processes)

    def stop_all(self):
        for process in self.processes:
            process.stop(timeout_s=10)


@pytest.fixture
def stack(transactional_db, tmp_path, settings, tiny_bundle):
    from predictor import registry

    redis = RedisServer(workdir=tmp_path / "redis")
    redis.start()
    stack = Stack(tmp_path=tmp_path, redis=redis, database_url=database_url_of(connection.settings_dict))
    # The test creates analyses itself; their photos must land where the processes under test look.
    settings.MEDIA_ROOT = stack.data_dir / "media"
    settings.MODEL_DIR = stack.model_dir
    registry.install_bundle(tiny_bundle, activate=True)
    connection.close()  # nothing of the test's own connection state leaks into what the processes see
    try:
        yield stack
    finally:
        stack.stop_all()
        redis.stop()


@pytest.fixture
def owner(django_user_model):
    user = django_user_model.objects.create_user(username="scale", password="a-long-test-password-9")
    policy.accept_terms(user)
    return user


def session_cookie(user) -> str:
    from django.test import Client

    client = Client()
    client.force_login(user)
    return client.cookies["sessionid"].value


def queue_analyses(owner, count: int) -> list[int]:
    from predictor import services

    return [services.create_analysis(owner=owner, data=make_jpeg(64 + i % 7, 48, colour=(i * 9 % 255, 90, 40))).pk
            for i in range(count)]


def states(ids: list[int]) -> dict[int, Analysis]:
    return {a.pk: a for a in Analysis.objects.filter(pk__in=ids)}


def assert_each_finished_once(ids: list[int]):
    """Every analysis is done, and its stored events are one complete, ordered run: one of each stage."""
    found = states(ids)
    assert sorted(found) == sorted(ids), "analyses were lost"
    for analysis in found.values():
        assert analysis.status == Analysis.Status.DONE, (analysis.pk, analysis.status, analysis.error_message)
        kinds = [event["type"] for event in analysis.events]
        assert kinds == STAGES, f"analysis {analysis.pk} stored {kinds}"
        assert [event["seq"] for event in analysis.events] == list(range(1, len(STAGES) + 1))
        assert {event["analysis"] for event in analysis.events} == {analysis.pk}
        assert analysis.summary["model_name"] == "tiny-untrained"


def test_worker_killed_mid_batch_its_analyses_are_requeued_and_finished_by_another(stack, owner):
    ids = queue_analyses(owner, 24)
    first = stack.worker("worker-a", batch=24)

    def mid_batch():
        found = states(ids).values()
        mine = [a for a in found if a.worker_id.split(":")[2:3] == [str(first.pid)]]
        finished = [a for a in mine if a.status == Analysis.Status.DONE]
        running = [a for a in mine if a.status == Analysis.Status.RUNNING]
        return (finished, running) if finished and running else None

    finished_before, running_before = wait_until(mid_batch, timeout_s=90, interval_s=0.01,
                                                 what="worker-a half-way through its batch")
    first.kill()
    killed_at = time.monotonic()
    done_by_first = {a.pk for a in states(ids).values() if a.status == Analysis.Status.DONE}
    assert running_before, "nothing was in flight when the worker died"

    second = stack.worker("worker-b", batch=24)
    try:
        wait_until(lambda: all(a.is_finished for a in states(ids).values()), timeout_s=90, interval_s=0.1,
                   what="worker-b to finish every analysis")
    except TimeoutError:
        pytest.fail(f"not all analyses finished:\n{stack.logs()}")
    finished_after = time.monotonic() - killed_at

    assert_each_finished_once(ids)
    found = states(ids)
    # Jobs finished before the kill were not run again; the others were taken over after the heartbeat timeout.
    for pk in done_by_first:
        assert found[pk].attempts == 1 and found[pk].worker_id.split(":")[2] == str(first.pid)
    taken_over = [found[pk] for pk in ids if pk not in done_by_first]
    assert taken_over
    assert all(a.worker_id.split(":")[2] == str(second.pid) for a in taken_over)
    assert all(a.attempts == 2 for a in taken_over)
    assert second.alive()
    print(f"{len(taken_over)} analyses taken over, all finished {finished_after:.1f} s after the kill")


def test_redis_restart_clients_reconnect_and_end_with_the_complete_result(stack, owner):
    import aiohttp

    url_a, _ = stack.web("web-a")
    url_b, _ = stack.web("web-b")
    cookie = session_cookie(owner)
    ids = queue_analyses(owner, 6)

    async def scenario():
        async with aiohttp.ClientSession() as session:
            watches = [AnalysisWatch(pk) for pk in ids]
            tasks = [asyncio.create_task(watch_analysis(session, base_url=(url_a, url_b)[i % 2], analysis_id=pk,
                                                        cookie=cookie, deadline_s=90, watch=watches[i]))
                     for i, pk in enumerate(ids)]
            await asyncio.to_thread(wait_until, lambda: all(w.connects == 1 for w in watches), timeout_s=30,
                                    what="every client connected")
            # Redis goes away with every group membership in it, and comes back empty.
            await asyncio.to_thread(stack.redis.restart)
            await asyncio.sleep(1)
            worker = await asyncio.to_thread(stack.worker, "worker-a", batch=8)
            results = await asyncio.gather(*tasks)
            return results, worker

    results, worker = asyncio.run(scenario())
    for watch in results:
        assert watch.done, f"analysis {watch.analysis_id}: no done ({watch.connects} connects)\n{stack.logs()}"
        assert watch.error is None and watch.foreign == []
        assert [e["type"] for _, e in sorted(watch.events.items())] == STAGES
    assert_each_finished_once(ids)
    assert worker.alive()
    print("connections per client across the Redis restart:", [w.connects for w in results])


def test_postgresql_unreachable_gives_503_and_the_worker_recovers_without_corruption(stack, owner):
    target = connection.settings_dict
    with TcpProxy(target_host=target.get("HOST") or "127.0.0.1", target_port=int(target.get("PORT") or 5432)) as proxy:
        proxied = database_url_of(target, host="127.0.0.1", port=proxy.port)
        url, _ = stack.web("web-a", database_url=proxied)
        cookie = session_cookie(owner)
        ids = queue_analyses(owner, 16)
        worker = stack.worker("worker-a", batch=8, database_url=proxied)

        wait_until(lambda: Analysis.objects.filter(pk__in=ids, status=Analysis.Status.RUNNING).exists()
                   or Analysis.objects.filter(pk__in=ids, status=Analysis.Status.DONE).exists(),
                   timeout_s=60, interval_s=0.01, what="the worker to start on the batch")
        proxy.cut()
        try:
            page = page_request(url, "/analyses/", cookie=cookie)
            api = page_request(url, "/analyses/", cookie=cookie, accept="application/json")
            health = http_status(url + "/healthz", timeout_s=20)
            # A long enough outage for the pool's reconnection back-off to grow (1, 2, 4, 8, 16 s ... under
            # psycopg_pool's defaults), with requests arriving meanwhile as they would from users.
            outage_ends = time.monotonic() + 20
            while time.monotonic() < outage_ends:
                page_request(url, "/analyses/", cookie=cookie)
                time.sleep(1)
        finally:
            proxy.restore()
        restored = time.monotonic()
        # Service comes back within seconds of the database, not after the back-off has run its course.
        wait_until(lambda: page_request(url, "/analyses/", cookie=cookie)["status"] == 200, timeout_s=8,
                   interval_s=0.25, what="the web process to serve pages again after PostgreSQL came back")
        print(f"pages served again {time.monotonic() - restored:.1f} s after PostgreSQL came back")

        assert page["status"] == 503, page
        assert page["headers"].get("retry-after") == "10"
        assert "GeoWeb is briefly unavailable" in page["body"]
        assert api["status"] == 503 and api["headers"]["content-type"] == "application/json"
        assert health == 503

        try:
            wait_until(lambda: all(a.is_finished for a in states(ids).values()), timeout_s=90, interval_s=0.2,
                       what="every analysis to finish after the outage")
        except TimeoutError:
            pytest.fail(f"not all analyses finished after the outage:\n{stack.logs()}")
        assert_each_finished_once(ids)
        assert worker.alive(), stack.logs()
        assert page_request(url, "/analyses/", cookie=cookie)["status"] == 200
        assert http_status(url + "/healthz") == 200


def page_request(base_url: str, path: str, *, cookie: str, accept: str = "text/html") -> dict:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(base_url + path, headers={"Cookie": f"sessionid={cookie}", "Accept": accept})
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return {"status": response.status, "headers": {k.lower(): v for k, v in response.headers.items()},
                    "body": response.read().decode(errors="replace")}
    except urllib.error.HTTPError as error:
        return {"status": error.code, "headers": {k.lower(): v for k, v in error.headers.items()},
                "body": error.read().decode(errors="replace")}


def delivery_lags_s(watches: list[AnalysisWatch]) -> list[float]:
    ids = [w.analysis_id for w in watches]
    finished = {a.pk: a.finished_at.timestamp() for a in Analysis.objects.filter(pk__in=ids)}
    return [max(0.0, w.done_wall - finished[w.analysis_id]) for w in watches]


def open_silent_websocket(base_url: str, analysis_id: int, cookie: str) -> socket.socket:
    """A websocket client that completes the handshake and then never reads again, with a tiny receive buffer."""
    host, port = base_url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    request = (f"GET /ws/analysis/{analysis_id}/ HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
               f"Connection: Upgrade\r\nSec-WebSocket-Key: {uuid.uuid4().bytes.hex()[:22]}==\r\n"
               f"Sec-WebSocket-Version: 13\r\nOrigin: {base_url}\r\nCookie: sessionid={cookie}\r\n\r\n")
    sock.sendall(request.encode())
    assert b" 101 " in sock.recv(1024).split(b"\r\n", 1)[0]
    return sock


def test_clients_that_stop_reading_do_not_slow_down_the_others(stack, owner, django_user_model):
    import aiohttp

    url, _ = stack.web("web-a")
    stack.worker("worker-a", batch=16)
    cookie = session_cookie(owner)
    stalled_user = django_user_model.objects.create_user(username="stalled", password="a-long-test-password-8")
    policy.accept_terms(stalled_user)
    stalled_cookie = session_cookie(stalled_user)

    def run_clients(count: int) -> list[AnalysisWatch]:
        ids = queue_analyses(owner, count)

        async def watch_all():
            async with aiohttp.ClientSession() as session:
                return await asyncio.gather(*(watch_analysis(session, base_url=url, analysis_id=pk, cookie=cookie,
                                                             deadline_s=60) for pk in ids))

        return asyncio.run(watch_all())

    assert all(w.done for w in run_clients(2)), stack.logs()  # warm-up: the worker loads the model

    def run_beside_stalled_user(*, silent_sockets_each: int) -> tuple[list[AnalysisWatch], int]:
        # The same work both times: the stalled user's analyses (queued first, with heat maps of up to 256 KiB)
        # and the measured clients' analyses; only the sockets that never read differ.
        stalled_ids = queue_analyses(stalled_user, 12)
        silent = [open_silent_websocket(url, pk, stalled_cookie) for pk in stalled_ids
                  for _ in range(silent_sockets_each)]
        try:
            watches = run_clients(12)
            wait_until(lambda: all(a.is_finished for a in states(stalled_ids).values()), timeout_s=60,
                       what="the stalled user's analyses to finish")
        finally:
            for sock in silent:
                sock.close()
        return watches, len(silent)

    baseline, _ = run_beside_stalled_user(silent_sockets_each=0)
    assert all(w.done for w in baseline), stack.logs()
    loaded, silent_count = run_beside_stalled_user(silent_sockets_each=3)

    assert all(w.done for w in loaded), stack.logs()
    assert all(w.error is None and w.foreign == [] for w in loaded)
    assert all([e["type"] for _, e in sorted(w.events.items())] == STAGES for w in loaded)
    # Delivery lag: from the moment the worker stored `done` to the moment the client had it. It leaves out the
    # worker's own pace (shared with the stalled user's analyses), which is not what stalled sockets could harm.
    base_lag, loaded_lag = delivery_lags_s(baseline), delivery_lags_s(loaded)
    print(f"done delivery lag p50/max: {statistics.median(base_lag) * 1000:.0f}/{max(base_lag) * 1000:.0f} ms "
          f"without, {statistics.median(loaded_lag) * 1000:.0f}/{max(loaded_lag) * 1000:.0f} ms with "
          f"{silent_count} stalled sockets; whole analysis p50 {statistics.median(w.latency_s for w in baseline):.1f} "
          f"s without, {statistics.median(w.latency_s for w in loaded):.1f} s with")
    # Bounds loose enough for a busy 2-core machine; a client held up by the stalled ones would wait seconds.
    assert statistics.median(loaded_lag) < 0.5 + 2 * statistics.median(base_lag)
    assert max(loaded_lag) < 5.0
    assert http_status(url + "/healthz") == 200
