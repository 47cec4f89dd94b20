//! The leader lease and the fence every write checks.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::*;

impl Store {
    /// Fence this store's writes on a lease (`None`: no fencing, a single daemon).
    pub fn set_fence(&self, fence: Option<(String, i64)>) {
        if let Ok(mut f) = self.fence.write() {
            *f = fence;
        }
    }

    /// Inside a write transaction: fail unless the fence (if set) still holds the lease.
    pub(super) async fn check_fence(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let fence = self.fence.read().ok().and_then(|f| f.clone());
        let Some((holder, token)) = fence else {
            return Ok(());
        };
        let held: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM leader_lease WHERE name = 'leader' AND holder = $1 AND token = $2 AND expires_at > $3",
        )
        .bind(&holder)
        .bind(token)
        .bind(millis(now))
        .fetch_one(&mut **tx)
        .await?;
        if held == 0 {
            return Err(StoreError::Fenced { holder, token });
        }
        Ok(())
    }

    /// Take or renew the leader lease for `me` until `now + ttl`. Returns the fencing token
    /// while `me` holds it; `None` while another holder's lease is live. The token grows by
    /// one with every change of holder (compare-and-set on the old token, so two takers
    /// cannot both win).
    pub async fn acquire_lease(
        &self,
        me: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<Option<i64>, StoreError> {
        let until = millis(now) + ttl.as_millis() as i64;
        let current = self.lease().await?;
        let taken = match current {
            None => sqlx::query(
                "INSERT INTO leader_lease (name, holder, token, expires_at) VALUES ('leader', $1, 1, $2) ON CONFLICT (name) DO NOTHING",
            )
            .bind(me)
            .bind(until)
            .execute(&self.lease_pool)
            .await?
            .rows_affected()
                == 1,
            Some(l) if l.holder == me || l.expires_at <= now => {
                let next = if l.holder == me { l.token } else { l.token + 1 };
                sqlx::query(
                    "UPDATE leader_lease SET holder = $1, token = $2, expires_at = $3 WHERE name = 'leader' AND token = $4 AND holder = $5",
                )
                .bind(me)
                .bind(next)
                .bind(until)
                .bind(l.token)
                .bind(&l.holder)
                .execute(&self.lease_pool)
                .await?
                .rows_affected()
                    == 1
            }
            Some(_) => false,
        };
        if !taken {
            return Ok(None);
        }
        Ok(self
            .lease()
            .await?
            .filter(|l| l.holder == me)
            .map(|l| l.token))
    }

    /// Give the lease up (clean shutdown), so a standby takes over at once.
    pub async fn release_lease(&self, me: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE leader_lease SET expires_at = 0 WHERE name = 'leader' AND holder = $1")
            .bind(me)
            .execute(&self.lease_pool)
            .await?;
        Ok(())
    }

    /// Who holds the lease (possibly expired).
    pub async fn lease(&self) -> Result<Option<Lease>, StoreError> {
        let row =
            sqlx::query("SELECT holder, token, expires_at FROM leader_lease WHERE name = 'leader'")
                .fetch_optional(&self.lease_pool)
                .await?;
        row.map(|r| {
            Ok(Lease {
                holder: r.try_get("holder")?,
                token: r.try_get("token")?,
                expires_at: from_millis(r.try_get("expires_at")?),
            })
        })
        .transpose()
    }
}
