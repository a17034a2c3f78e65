"""The drafter's way in and out of the target's hidden space (mirrors `pre_projection` and
`post_projection` of `Gemma4AssistantForCausalLM`).

The drafter is narrower than its target, and it is fed by the target, not by its own embedding:

    x = pre_projection([target_embed(token) ; h])        (2 * backbone,) -> (hidden,)
    ... the drafter's decoder layers ...
    h' = post_projection(final_norm(x))                  (hidden,) -> (backbone,)

`target_embed(token)` is the target's scaled embedding of the last token, `h` the target's last
hidden state (after its final norm) at the position before: together, "what came last" and
"everything the target understood so far". `h'` plays the role of `h` at the next draft step, so
the drafter can run several steps with no target pass in between.
"""

from __future__ import annotations

import numpy as np

from ..text.ops import linear


def project_in(token_embedding: np.ndarray, target_hidden: np.ndarray, pre_projection) -> np.ndarray:
    """(seq, backbone) twice -> (seq, hidden): the concatenation, projected to the drafter's width."""
    return linear(np.concatenate([token_embedding, target_hidden], axis=-1), pre_projection)


def project_out(h: np.ndarray, post_projection) -> np.ndarray:
    """(seq, hidden) -> (seq, backbone): the drafter's stand-in for the target's next hidden state."""
    return linear(h, post_projection)
