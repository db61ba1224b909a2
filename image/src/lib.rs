//! Disk-image code for cluster-lab: read and edit SD-card images without root or loop mounts.
