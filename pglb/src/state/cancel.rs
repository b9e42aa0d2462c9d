//! The table of cancel keys: which server runs the session a CancelRequest
//! names. Sessions register their key (from BackendKeyData) and remove it
//! when they end; `proxy::cancel` delivers cancels with it.

use crate::pg::startup::CancelKey;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

#[derive(Debug, Default)]
pub struct CancelRegistry {
    sessions: Mutex<HashMap<CancelKey, SocketAddr>>,
    /// Cancels delivered to the one server that holds the session.
    pub routed: AtomicU64,
    /// Cancels sent to every usable server because the key was unknown.
    pub broadcast: AtomicU64,
}

impl CancelRegistry {
    pub fn register(&self, key: CancelKey, server: SocketAddr) {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).insert(key, server);
    }

    pub fn unregister(&self, key: &CancelKey) {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }

    pub fn lookup(&self, key: &CancelKey) -> Option<SocketAddr> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).get(key).copied()
    }

    pub fn len(&self) -> usize {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
