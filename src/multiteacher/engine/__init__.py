"""Engine: Fabric setup, the fit loop, and the job executor."""
