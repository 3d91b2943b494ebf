//! A fake Kubernetes API server for pushroll's tests.
