"""Tables (`models.tables`), the database session (`models.db`) and migrations. Depends on
nothing else in reconbot.

Nothing is imported here: creating the table classes costs about 0.2 s, which `recon
ingest` (ADBC only) does not need to pay. Import them from `models.tables`.
"""
