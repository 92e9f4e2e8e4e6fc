"""A data folder whose nodules are the reviewed ones (for scoring against reviewed truth)."""

from __future__ import annotations

import os

from src_train.luna import LunaFolder, Nodule
from src_train.reviews.apply import reviewed_nodules
from src_train.reviews.book import ReviewBook


class ReviewedFolder(LunaFolder):
    """A :class:`LunaFolder` whose :meth:`nodules` are the reviewed nodules.

    Rejected annotations are left out and the reviewers' additions are included (with the
    diameter they set), so code that scores or masks "the folder's nodules" uses the reviewed
    ground truth. Corrected voxels are not part of a nodule list: masks that need them come
    from :func:`~src_train.reviews.apply.apply_book`.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        super().__init__(root)
        self.book = ReviewBook.for_folder(self)

    def nodules(self, uid: str) -> list[Nodule]:
        """Reviewed nodules of a series: annotations not rejected, then standing additions."""
        return reviewed_nodules(super().nodules(uid), self.book.histories(uid))

    @property
    def nodules_by_series(self) -> dict[str, list[Nodule]]:
        """Every series on disk -> its reviewed nodules, sorted by UID."""
        return {uid: self.nodules(uid) for uid in self.series_uids}
