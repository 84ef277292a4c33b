"""One file per BASE module stage; each works on Arrow data and is testable alone."""
