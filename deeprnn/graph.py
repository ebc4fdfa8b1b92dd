"""The whole training step (forward, backward, clipping, optimizer) recorded once as a CUDA graph.

A small recurrent model's step is hundreds of short kernels; launched one by one from Python, the
GPU waits on the launches (the book's recipe on an H200: about 5.6 ms a step, nearly all of it
launch overhead). Replaying a recorded graph launches them all at once.
"""
from __future__ import annotations

import torch

from .model import detach_state, map_state


def make_capturable(optimizer: torch.optim.Optimizer) -> None:
    """What a recorded optimizer step needs: each group's rate as a device tensor, which the graph
    reads at every replay (so the schedule and the page can change it without recording again),
    and Adam's `capturable` flag. Call it again after `load_state_dict`, which replaces both."""
    for group in optimizer.param_groups:
        group["lr"] = torch.tensor(float(group["lr"]), device=group["params"][0].device)
        if "capturable" in group:
            group["capturable"] = True


class CapturedStep:
    """Calls `step_fn(x, y, state) -> (loss, norms, new_state)` eagerly a few times, then records it
    and replays the recording.

    The recording reads fixed input buffers and writes fixed output buffers, so each call copies the
    batch and state in, and hands back copies of the loss and norms (the next replay overwrites
    them). The weights, gradients and optimizer state are the recording's own: anything that
    replaces those tensors (the optimizer's `load_state_dict`, a new clip value baked into the
    kernels) needs a new CapturedStep.
    """

    EAGER_STEPS = 3  # before recording: the optimizer creates its state, cuDNN and cuBLAS their workspaces

    def __init__(self, step_fn):
        self.step_fn = step_fn
        self.stream = torch.cuda.Stream()  # PyTorch records graphs on a side stream; warm up on the same one
        self.eager_left = self.EAGER_STEPS
        self.graph: torch.cuda.CUDAGraph | None = None

    def __call__(self, x: torch.Tensor, y: torch.Tensor, state: list):
        if self.graph is None and self.eager_left:
            self.eager_left -= 1
            return self._on_side_stream(x, y, state)
        if self.graph is None:
            self._record(x, y, state)
        self._copy_in(x, y, state)
        self.graph.replay()
        loss, norms, new_state = self.outputs
        return loss.clone(), norms.clone(), detach_state(new_state)

    def _on_side_stream(self, x, y, state):
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            result = self.step_fn(x, y, state)
        torch.cuda.current_stream().wait_stream(self.stream)
        return result

    def _record(self, x, y, state) -> None:
        self.inputs = (x.clone(), y.clone(), map_state(torch.clone, state))
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: the page's view thread may use the GPU while the training thread records
        with torch.cuda.graph(self.graph, stream=self.stream, capture_error_mode="thread_local"):
            self.outputs = self.step_fn(*self.inputs)

    def _copy_in(self, x, y, state) -> None:
        static_x, static_y, static_state = self.inputs
        static_x.copy_(x)
        static_y.copy_(y)
        for static, given in zip(state_tensors(static_state), state_tensors(state)):
            static.copy_(given)


def state_tensors(state: list) -> list:
    """A per-layer state's tensors in order, an LSTM's (h, c) pairs unpacked."""
    return [t for layer in state for t in (layer if isinstance(layer, tuple) else (layer,))]
