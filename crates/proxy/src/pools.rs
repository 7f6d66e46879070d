//! Pool limits from the `[pool]` settings. Pools themselves live with their
//! server in [`crate::backends`].

use pgpilot_config::PoolSettings;
use pgpilot_pool::PoolLimits;

/// Pool limits from the `[pool]` settings.
pub fn limits(p: &PoolSettings) -> PoolLimits {
    PoolLimits {
        min_size: p.min_size,
        max_size: p.max_size.get(),
        connect_timeout: p.connect_timeout,
        checkout_timeout: p.checkout_timeout,
        idle_timeout: p.idle_timeout,
        max_lifetime: p.max_lifetime,
    }
}
