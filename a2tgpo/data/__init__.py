"""The data layer: stage datasets and folders in object storage, and dataset loaders.

schemas.py      canonical Arrow schemas (prompts, trajectories, scored, advantaged)
validate.py     Validator: schema and row-invariant checks on write
storage.py      Storage: a local folder or s3:// (fsspec + pyarrow filesystems)
manifest.py     Manifest: what a committed stage holds, lineage, code version
commit.py       the commit protocol (manifest last, create-if-absent, sweep)
stage.py        write_stage / read_stage / iter_stage_batches for datasets
directories.py  commit_directory / materialize for folders (checkpoints)
loaders.py      verl / Search-R1 parquet and FlashRAG jsonl/parquet -> PROMPTS
fakes.py        synthetic valid datasets for tests and benchmarks
errors.py       DatasetValidationError, NotCommitted, StageMismatch
"""
