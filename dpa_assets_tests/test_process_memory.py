"""A day's freed memory goes back to the OS: Arrow allocates through malloc once a day is received or loaded."""

import pyarrow as pa

from dpa_assets.process_memory import release_free_heap, return_freed_memory


def test_arrow_allocates_through_malloc_after_the_first_day_stage():
    return_freed_memory()
    assert pa.default_memory_pool().backend_name == "system"
    table = pa.table({"texts": ["Douala", "Edéa"] * 1000})
    assert pa.total_allocated_bytes() >= table.nbytes  # the table's buffers come from the system pool
    release_free_heap()  # the live table is untouched by a trim
    assert table.column("texts")[1].as_py() == "Edéa"
