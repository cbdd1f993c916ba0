"""The one way our code starts work: commit the run row, then publish with its task_id."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import current_app
from kombu.exceptions import OperationalError as KombuOperationalError

#: Errors that mean "the broker did not take the message".
PUBLISH_ERRORS = (KombuOperationalError, ConnectionError, TimeoutError, OSError)


class BrokerUnavailable(Exception):
    """The message could not be handed to the broker; the run row records why."""


class UnknownTask(LookupError):
    """No task of that name is registered."""


def enqueue(
    task_name: str,
    args: list[Any] | tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    *,
    trigger: str,
    countdown: float | None = None,
    eta: datetime | None = None,
    queue: str | None = None,
    task_id: str | None = None,
    schedule_id: int | None = None,
    rerun_of_id: int | None = None,
) -> str:
    """Start a registered task by name and return its task_id.

    Raises UnknownTask for a name that is not registered and BrokerUnavailable when Redis
    cannot take the message (the run is then recorded as failed with the reason).
    """
    task = current_app.extensions["celery"].tasks.get(task_name)
    if task is None or task_name.startswith("celery."):
        raise UnknownTask(task_name)
    options: dict[str, Any] = {"bk_trigger": trigger, "bk_schedule_id": schedule_id,
                               "bk_rerun_of_id": rerun_of_id}
    if countdown is not None:
        options["countdown"] = countdown
    if eta is not None:
        options["eta"] = eta
    if queue is not None:
        options["queue"] = queue
    result = task.apply_async(list(args), dict(kwargs or {}), task_id=task_id, **options)
    return result.id


def routed_queue(celery_app: Any, task_name: str, args: Any, kwargs: Any,
                 options: dict[str, Any]) -> str | None:
    """The queue a message with these options goes to, after `task_routes` and a
    `routing_key`, as Celery's router and its amqp publisher decide it: the queue that
    recovery searches for the run's message and that a later publish of the run uses."""
    routed = celery_app.amqp.router.route(dict(options), task_name, args, kwargs)
    queue = routed.get("queue")
    if queue is None or isinstance(queue, str):
        return queue
    key = routed.get("routing_key")
    if not key or key == queue.routing_key:
        return queue.name
    exchange = routed.get("exchange") or queue.exchange
    exchange = getattr(exchange, "name", exchange)
    for declared in celery_app.amqp.queues.values():
        if declared.routing_key == key and declared.exchange.name == exchange:
            return declared.name
    # A direct exchange delivers by routing key; with Celery's automatic queues the queue is
    # named after it.
    return key
