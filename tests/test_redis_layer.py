"""The Redis channel layer of the scale-out mode keeps an idle websocket's receive alive.

With redis-py 8 and channels-redis 4.3 a receive that waited the layer's 5 s blocking pop without a message raised
"Timeout reading from ..." and the consumer died: every analysis page whose first event took more than 5 s (any
cold worker) never got it. Runs in the PostgreSQL + Redis pass only.
"""
from __future__ import annotations

import asyncio
import os

import pytest
from django.conf import settings

pytestmark = pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="the Redis pass only")


async def test_a_receive_that_waits_longer_than_the_blocking_pop_still_gets_its_message():
    from channels_redis.core import RedisChannelLayer

    config = settings.CHANNEL_LAYERS["default"]["CONFIG"]
    layer = RedisChannelLayer(hosts=config["hosts"], prefix=f"{config['prefix']}-idle")
    channel = await layer.new_channel()
    receiving = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(layer.brpop_timeout + 2)  # longer than one blocking pop, with nothing sent
    assert not receiving.done(), receiving.exception() if receiving.done() else None
    await layer.send(channel, {"type": "analysis.event", "n": 1})
    message = await asyncio.wait_for(receiving, 10)
    assert message["n"] == 1
    await layer.flush()
