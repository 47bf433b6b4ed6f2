//! SSH endpoint of the simulated router (in progress).
