"""Many cores, many hosts: a pipeline's processors and batchers in worker nodes.

    from pybroadway.workers import WorkerFront

    pipeline = Orders(producer={"module": (OtpDistributionProducer, {"node": node})},
                      offload=(WorkerFront, {"count": 2, "redeliver": True}))

The front (this node) keeps the producers and the acknowledgers; the workers — ``count``
processes it starts and supervises, and any ``pybroadway worker --join front@host`` from other
hosts — subscribe to its GenStage producer stage, run ``handle_message`` / ``handle_batch`` and
report each message's outcome by id. Workers announce themselves in the ``pg`` scope
``pybroadway``, group = the pipeline's name. Logging goes to the ``pybroadway.workers`` logger;
the output of the workers the front starts, to its stdout and ``pybroadway.workers.output``
(:mod:`._output`).
"""

from ._front import FrontStage, Worker, WorkerFront
from ._output import log_for_front
from ._ports import COOKIE_ENV, WorkerPort, WorkerPorts, worker_argv
from ._protocol import OUTCOMES, SCOPE, WorkerError, group, stage_name
from ._schema import SCHEMA
from ._worker import OnStarted, load_pipeline_class, read_cookie, run_worker, worker_pipeline

__all__ = [
    "COOKIE_ENV",
    "OUTCOMES",
    "SCHEMA",
    "SCOPE",
    "FrontStage",
    "OnStarted",
    "Worker",
    "WorkerError",
    "WorkerFront",
    "WorkerPort",
    "WorkerPorts",
    "group",
    "load_pipeline_class",
    "log_for_front",
    "read_cookie",
    "run_worker",
    "stage_name",
    "worker_argv",
    "worker_pipeline",
]
