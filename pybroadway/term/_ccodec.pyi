from collections.abc import Callable
from typing import Any

def setup(atom: type, pid: type, reference: type, charlist: type, improper_list: type,
          decode_error: type, encode_error: type,
          map_from_items: Callable[[Any, int], Any]) -> None: ...

class Decoder:
    def __init__(self, strings: bool, none: str, deep_from: int,
                 rare: Callable[[Any, int, int, int], tuple[Any, int]],
                 deep: Callable[[Any, int, int], tuple[Any, int]],
                 fallback: Callable[[Any], Any],
                 fallback_from: Callable[..., tuple[Any, int]]) -> None: ...
    def decode(self, data: bytes | bytearray | memoryview) -> Any: ...
    def decode_from(self, data: bytes | bytearray | memoryview, offset: int = 0
                    ) -> tuple[Any, int]: ...
    def term(self, data: Any, pos: int, depth: int) -> tuple[Any, int]: ...

class Encoder:
    def __init__(self, none_ext: bytes, true_ext: bytes, false_ext: bytes,
                 write: Callable[[Any, bytearray], None],
                 deep: Callable[[Any, bytearray], None], deep_from: int,
                 atom_ext: Callable[[Any], bytes],
                 pid_ext: Callable[[Any], bytes],
                 reference_ext: Callable[[Any], bytes]) -> None: ...
    def encode(self, value: Any) -> bytes: ...
    def write(self, value: Any, out: bytearray) -> None: ...
