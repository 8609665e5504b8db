from collections.abc import Callable
from typing import Any

from pybroadway.pipeline import Message

def unwrap(events: list[Any], template: Message, replier: Any, stage: Any, same: Any,
           convert: Callable[[Any], Any]) -> list[Message]: ...
