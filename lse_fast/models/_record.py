"""A layout record: a buffer through which a model's checkpoints say how the
network was wired (DeepLab-v2's summed ASPP branches, FCN-8s's skip scales)."""

from torch import nn


class LayoutRecord(nn.Module):
    """Mixin for a module with a persistent buffer ``RECORD`` that states its
    layout. Loading a state dict that holds the buffer applies it through
    :meth:`apply_record`; a checkpoint without it (older than the record)
    leaves the layout as built and is not reported as missing the buffer."""

    RECORD = ""

    def apply_record(self, value):
        raise NotImplementedError

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        key = prefix + self.RECORD
        had = key in state_dict
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if had:
            self.apply_record(state_dict[key])
        elif key in missing_keys:
            missing_keys.remove(key)
