"""The streaming cache: hidden states of earlier frames a streaming step attends to."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from endo_depth_ros.models.video_depth_anything.motion import STATES_PER_FRAME
from endo_depth_ros.models.video_depth_anything.windows import STREAM_GAP, WINDOW


class StreamingCache:
    """The fixed ring of hidden states a streaming step attends to.

    Keeps, like the official ``video_depth_stream.py``, the first frame's states
    (repeated to fill the window until enough frames arrived) and the last
    ``STREAM_GAP`` frames'; a step reads the first frame, the frame ``STREAM_GAP``
    steps back and the last ``WINDOW - 3`` frames (``WINDOW - 1`` in all). Storage is
    allocated once, on the first frame, for ``STREAM_GAP + 1`` frames: memory does not
    grow with the stream.
    """

    def __init__(self) -> None:
        self._storage: list[torch.Tensor] = []
        self._order: list[int] = []  # slot of each logical entry (the official list)
        self._slot_frame: list[int] = []  # stream index of the frame held by each slot
        self._frames = 0

    @property
    def frames(self) -> int:
        """Frames pushed since the last reset."""
        return self._frames

    @property
    def empty(self) -> bool:
        return self._frames == 0

    @property
    def fill(self) -> int:
        """Distinct earlier frames the next step attends to (0 .. ``WINDOW - 1``)."""
        return len(set(self._context_slots())) if self._order else 0

    @property
    def nbytes(self) -> int:
        """Bytes held by the preallocated storage."""
        return sum(t.numel() * t.element_size() for t in self._storage)

    def reset(self) -> None:
        """Forget every frame (the storage is freed; the next frame starts a stream)."""
        self._storage = []
        self._order = []
        self._slot_frame = []
        self._frames = 0

    def context_frames(self) -> list[int]:
        """Stream indices (0-based) of the ``WINDOW - 1`` entries the next step reads."""
        return [self._slot_frame[slot] for slot in self._context_slots()] if self._order else []

    def context(self) -> list[torch.Tensor]:
        """The ``STATES_PER_FRAME`` tensors (S_i, WINDOW - 1, C_i) the next step reads."""
        if not self._order:
            raise RuntimeError('The streaming cache is empty: run the first frame without it.')
        index = torch.tensor(self._context_slots(), device=self._storage[0].device)
        return [t.index_select(1, index) for t in self._storage]

    def push(self, states: Sequence[torch.Tensor]) -> None:
        """Store one frame's states (each (S_i, 1, C_i)) as the newest entry."""
        if len(states) != STATES_PER_FRAME:
            raise ValueError(f'Expected {STATES_PER_FRAME} states, got {len(states)}.')
        if not self._order:
            capacity = STREAM_GAP + 1
            self._storage = [s.new_empty((s.shape[0], capacity, s.shape[2])) for s in states]
            self._slot_frame = [-1] * capacity
            self._write(0, states)
            self._order = [0] * WINDOW  # the first frame stands in for a whole window
        else:
            if self._frames + WINDOW > STREAM_GAP + 1:
                # The official code drops this entry right after appending the new one;
                # dropping it first lets the new frame reuse its slot.
                del self._order[1]
            slot = self._free_slot()
            self._write(slot, states)
            self._order.append(slot)
        self._frames += 1

    def _context_slots(self) -> list[int]:
        return self._order[:2] + self._order[-(WINDOW - 3):]

    def _free_slot(self) -> int:
        # A slot is free when no logical entry refers to it (at most STREAM_GAP are).
        used = set(self._order)
        return next(i for i in range(self._storage[0].shape[1]) if i not in used)

    def _write(self, slot: int, states: Sequence[torch.Tensor]) -> None:
        self._slot_frame[slot] = self._frames
        for store, state in zip(self._storage, states, strict=True):
            if state.shape[0] != store.shape[0] or state.shape[2] != store.shape[2]:
                raise ValueError(
                    f'Hidden state of shape {tuple(state.shape)} does not fit the cache '
                    f'{tuple(store.shape)}; reset the stream when the image size changes.')
            store[:, slot] = state[:, -1]
