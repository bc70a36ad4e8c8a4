"""A pub/sub channel that a process listens to in a daemon thread, for state it keeps from Redis.

The model cache (deleted models) and the table of stored API keys (created and revoked keys) keep
what they read from Redis in each process and hear of changes over pub/sub. Both follow one rule:
that state may be trusted only while the subscription is up. So ``listening`` is set only once the
channel is subscribed *and* the listener's ``on_subscribed`` has (re)built its state, and it is
cleared, with ``on_lost``, whenever the connection fails: messages may have been missed meanwhile,
and until the next subscription the listener must go to Redis instead.

The thread starts on first use in each process rather than at app creation: gunicorn forks its
workers after importing the app factory module, and a thread does not survive a fork. It holds its
listener weakly and ends once the listener is gone, so an app that is dropped (as the tests drop
theirs) leaves no thread and no connection behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Protocol

import redis

log = logging.getLogger(__name__)


class Listener(Protocol):
    def on_subscribed(self) -> None:
        """The channel is (re)subscribed: rebuild the state, since changes may have been missed."""

    def on_message(self, data: bytes) -> None:
        """A message published on the channel."""

    def on_lost(self) -> None:
        """The subscription is down (or this is a new process): the state can no longer be trusted."""


class Subscription:
    def __init__(self, connect: Callable[[], redis.Redis], channel: str, listener: Listener, name: str):
        self._connect = connect
        self._channel = channel
        self._listener = weakref.ref(listener)
        self._name = name
        self._subscribed = threading.Event()
        self._pid: int | None = None
        self._lock = threading.Lock()

    @property
    def listening(self) -> bool:
        """True while the channel is subscribed and the listener's state is rebuilt since."""
        return self._subscribed.is_set()

    def ensure_started(self) -> None:
        """Start this process's listening thread, unless it runs already."""
        if self._pid == os.getpid():
            return
        with self._lock:
            if self._pid == os.getpid():
                return
            self._pid = os.getpid()
            self._subscribed.clear()
            listener = self._listener()
            if listener is not None:
                listener.on_lost()  # whatever was inherited over a fork was never listened for here
            del listener
        threading.Thread(target=self._run, name=f"nnserve-{self._name}", daemon=True).start()

    def _run(self) -> None:
        delay = 0.1
        while self._listener() is not None:
            pubsub = None
            try:
                pubsub = self._connect().pubsub()
                pubsub.subscribe(self._channel)
                while True:
                    message = pubsub.get_message(timeout=1.0)
                    listener = self._listener()
                    if listener is None:
                        return
                    if message is None:
                        pubsub.ping()  # notices a dead connection within the socket timeout
                    elif message["type"] == "subscribe":
                        listener.on_subscribed()
                        self._subscribed.set()
                        delay = 0.1
                    elif message["type"] == "message":
                        listener.on_message(message["data"])
                    del listener  # held only while it is called, so that it can be dropped
            except redis.exceptions.RedisError as error:
                if self._subscribed.is_set():
                    log.warning(
                        "%s: lost the channel %s (%s); going to Redis meanwhile", self._name, self._channel, error
                    )
                self._subscribed.clear()
                listener = self._listener()
                if listener is not None:
                    listener.on_lost()
                del listener
            finally:
                if pubsub is not None:
                    with contextlib.suppress(redis.exceptions.RedisError):
                        pubsub.close()
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
