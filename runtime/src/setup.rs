//! Inside the container, before execve: namespaces' contents (mounts, pivot_root, hostname,
//! loopback) and the process's credentials (rlimits, user, capabilities).
