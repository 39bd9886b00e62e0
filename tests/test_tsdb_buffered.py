"""The tsdb contract (``test_tsdb.py``) again, with the Redis write buffer on.

Every test there runs here twice, against one Redis and against a 3-node
Redis Cluster; ``rows()`` and ``stored_anything()`` flush first, so the
stored rows must come out exactly as without the buffer. The tests that
count the database statements of the unbuffered path are replaced by the
buffered budgets in ``test_buffer.py``.
"""

from __future__ import annotations

from typing import Any

import pytest

from .test_tsdb import *  # noqa: F403 - collected again here, buffered

UNBUFFERED_QUERY_COUNTS = {
    "test_incr_is_one_statement",
    "test_get_range_is_one_query_whatever_the_points",
    "test_get_range_total_sums_in_one_query",
    "test_get_range_by_project_zero_fills_every_project",
    "test_delete_removes_every_row_of_the_given_projects_only",
    "test_environment_check_probes_an_index_per_project_instead_of_reading_rows",
    "test_environment_check_probes_the_index_when_most_rows_have_none",
}


@pytest.fixture(autouse=True)
def _buffered(request: pytest.FixtureRequest, buffer: dict[str, Any]) -> None:
    if request.node.originalname in UNBUFFERED_QUERY_COUNTS:
        pytest.skip("counts the unbuffered path's queries; test_buffer.py has the buffered ones")
