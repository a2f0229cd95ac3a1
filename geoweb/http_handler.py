"""Django's ASGI HTTP handler, with each request's sync work done in one call on a fixed pool of threads.

Django's stock ASGI handler builds an async middleware chain: each sync-capable middleware's process_request and
process_response then goes through its own sync_to_async call, about 30 thread hops per request with our ten
middleware, and every request gets a new thread, so a database connection can never outlive its request. On the
development machine a hello-world view cost 6.3 ms through the stock handler and 0.45 ms through the WSGI handler;
a game guess spent about 6 ms of its 16 ms reconnecting to SQLite and preparing its statements again
(benchmarks/RESULTS.md, "Play mode").

Here every view and middleware is synchronous, so the chain is built in sync mode and the whole request (middleware,
view) runs in one call on a bounded pool of long-lived threads (settings.HTTP_THREADS). With SQLite the threads keep
their connections between requests (CONN_MAX_AGE); with PostgreSQL the connection goes back to the pool. Async
views (healthz) take Django's own async path, as before: run through async_to_sync from a pool thread, the health
check's channel-layer round trip sometimes found no answer within its 3 s while websockets were busy
(tests/test_scaleout_faults.py). Websockets do not come through here.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.conf import settings
from django.core.handlers import base
from django.core.handlers.asgi import ASGIHandler
from django.db import close_old_connections
from django.urls import Resolver404, get_resolver


class PooledSyncASGIHandler(ASGIHandler):
    def __init__(self):
        base.BaseHandler.__init__(self)
        self.load_middleware(is_async=False)
        self._executor: ThreadPoolExecutor | None = None
        self._executor_pid: int | None = None
        self._async_views = ASGIHandler()  # the stock handler, with its async middleware chain

    def _threads(self) -> ThreadPoolExecutor:
        # A forked child (the test suite's live server) inherits the executor object but none of its threads.
        if self._executor is None or self._executor_pid != os.getpid():
            self._executor = ThreadPoolExecutor(max_workers=settings.HTTP_THREADS, thread_name_prefix="geoweb-http")
            self._executor_pid = os.getpid()
        return self._executor

    async def get_response_async(self, request):
        if self._is_async_view(request):
            return await self._async_views.get_response_async(request)
        return await sync_to_async(self._respond, thread_sensitive=False, executor=self._threads())(request)

    @staticmethod
    def _is_async_view(request) -> bool:
        try:
            match = get_resolver().resolve(request.path_info)
        except Resolver404:
            return False  # the sync chain answers the 404 (and CommonMiddleware's slash redirect)
        return iscoroutinefunction(match.func)

    def _respond(self, request):
        # Django's request_started / request_finished handlers run on other threads here, so this thread does
        # their connection housekeeping itself: drop a connection that broke or outlived CONN_MAX_AGE, before the
        # request and after it.
        close_old_connections()
        try:
            return self.get_response(request)
        finally:
            close_old_connections()
