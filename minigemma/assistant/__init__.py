"""The multi-token-prediction assistant: a small drafter that proposes the target's next tokens
for speculative decoding (`generate/speculative.py`), one feature per file.

Read in the order a draft step runs:

    config.py        Gemma4AssistantConfig (and the unified variant): a text config whose layers
                     all read the target's keys/values, plus the head's settings
    projections.py   in: [target embedding of the last token ; target hidden state] -> drafter
                     width; out: back to the target's width, for the next draft step
    decoder.py       the drafter's layers, attending to the target's last sliding / full layers
    ordered_head.py  the ordered-embedding head: score clusters, then only their tokens
    model.py         weights, loading a checkpoint directory, one draft step
"""

from .config import AssistantConfig, load_assistant_config
from .model import Assistant, load_assistant

__all__ = ["Assistant", "AssistantConfig", "load_assistant", "load_assistant_config"]
