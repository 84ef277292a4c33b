"""multimodal_processing: documents, images, GeoJSON and time series, a row per file."""
