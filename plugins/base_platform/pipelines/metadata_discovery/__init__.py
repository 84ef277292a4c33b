"""metadata_discovery: the registry entry of each dataset."""
