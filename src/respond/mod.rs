//! Response: policy, journal and revoke hooks (issue 4).
