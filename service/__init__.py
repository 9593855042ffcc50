"""bnserve service: artifact -> HTTP."""
