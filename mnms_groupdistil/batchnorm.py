"""BatchNorm running statistics recomputed over given batches, as the plain mean of per-batch statistics.

BatchNorm normalises a training batch with that batch's own mean and variance, but an evaluated
network uses running statistics: an exponential moving average over the last batches. When the
training batches are not like the data evaluated (one group per batch, Algorithm 1 of
GroupDistil) or the weights are an average of several steps (weight averaging), those running
statistics describe the wrong network or the wrong data. :func:`recompute_batchnorm_stats` sets them
afresh with the weights fixed: ``running_mean`` is the mean of the batches' means and
``running_var`` the mean of their unbiased variances, every batch weighing the same (the "precise
BN" of Wu and Johnson, 2021; fvcore's ``update_bn_stats`` and ``torch.optim.swa_utils.update_bn``
do the same with plain batches).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["batchnorm_layers", "recompute_batchnorm_stats"]


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The BatchNorm layers of ``model`` (``BatchNorm1d/2d/3d``, ``SyncBatchNorm``) that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]


@torch.no_grad()
def recompute_batchnorm_stats(model: nn.Module, inputs: Iterable[torch.Tensor]) -> int:
    """Replace the running statistics of every BatchNorm layer of ``model`` by the mean over ``inputs``.

    Each input batch runs through ``model`` with its BatchNorm layers in training mode (every other
    layer in evaluation mode, no gradients, the weights untouched); each layer's ``running_mean``
    becomes the mean of the batches' means, ``running_var`` the mean of their unbiased variances
    (BatchNorm's cumulative average, ``momentum=None``). Under ``torch.distributed`` the result is
    averaged over the ranks, so that every rank holds the same statistics (ranks should see batches
    of the same size). The layers' momentum and the model's training flag are restored.

    Args:
        model: the network (a plain module; not a ``DistributedDataParallel`` wrapper).
        inputs: the batches, already on the model's device.

    Returns:
        The number of batches used; 0 leaves the statistics as they were (also for a model without
        BatchNorm, which is not run at all).
    """
    layers = batchnorm_layers(model)
    if not layers:
        return 0
    saved = [(m.running_mean.clone(), m.running_var.clone(), m.num_batches_tracked.clone(), m.momentum) for m in layers]
    was_training = model.training
    model.eval()
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None
        layer.train()
    count = 0
    try:
        for batch in inputs:
            model(batch)
            count += 1
    finally:
        for layer, (mean, var, tracked, momentum) in zip(layers, saved):
            layer.momentum = momentum
            if count == 0:
                layer.running_mean.copy_(mean)
                layer.running_var.copy_(var)
                layer.num_batches_tracked.copy_(tracked)
        model.train(was_training)
    if count and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        world = dist.get_world_size()
        for layer in layers:
            for stat in (layer.running_mean, layer.running_var):
                dist.all_reduce(stat, op=dist.ReduceOp.SUM)
                stat.div_(world)
    return count
