"""Training: embedding shards, GeoSURGE and GeoCLIP trainers, distributed launch, synthetic world."""
