"""data_ingestion: sources and their positions, and decoding bytes into Arrow batches."""
