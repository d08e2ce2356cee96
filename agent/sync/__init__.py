"""Nightly sync of models and the product database: signed bundles, A/B slots, golden check, trial.

    manifest.py  the signed manifest (DSSE envelope, Ed25519)
    download.py  HTTPS with ETag, Range resume and size limits (the sync's requests adapter)
    store.py     slots on disk, the atomic switch, recovery at start
    golden.py    a staged model must reproduce its golden results
    schedule.py  the nightly window
    job.py       the whole job: schedule, sync, switch, trial, rollback
"""
