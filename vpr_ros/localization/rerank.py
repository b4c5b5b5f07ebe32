"""Re-ranking of retrieved keyframes by place-level voting.

Neighbouring keyframes of one traversal show the same place. A true revisit therefore retrieves
several keyframes close together in time on one session, while a look-alike tends to be an isolated
hit. Each candidate's `place_score` is the sum of the cosine scores of the retrieved keyframes on its
session within `window_s` of it (itself included); candidates are ordered by it. The cosine `score`
is kept for thresholding, so the threshold means the same with or without voting.

On Gardens Point, with the earlier default model (EfficientNet-Lite0 block 15), voting lowered
single-frame R@1 on every pair tried (a one-off measurement that no script in this repository
reproduces), and sequence decisions now do the work voting was meant for. So the engine
default is no re-ranking; voting stays available for maps where look-alikes are isolated and
true places are retrieved as several keyframes.
"""
from typing import List, Sequence

from vpr_ros.localization.decision import Candidate


def place_voting(candidates: Sequence[Candidate], window_s: float) -> List[Candidate]:
    """Candidates with `place_score` set by voting, best place first (ties keep cosine order)."""
    voted = []
    for cand in candidates:
        support = sum(max(other.score, 0.0) for other in candidates
                      if other.session == cand.session and abs(other.stamp - cand.stamp) <= window_s)
        voted.append(Candidate(cand.keyframe_id, cand.session, cand.stamp, cand.score, support))
    return sorted(voted, key=lambda c: -c.place_score)
