"""Private implementation shared by the sync and async stores: SQL, validation, error mapping."""
