//! The warnings and infos a query collects while it runs (Prometheus's annotations).

/// Warnings and infos of one query (Prometheus's annotations), shared by its operators through
/// the session config of the query's task context.
#[derive(Debug, Default)]
pub(crate) struct Annotations {
    warnings: std::sync::Mutex<Vec<String>>,
    infos: std::sync::Mutex<Vec<String>>,
}

impl Annotations {
    fn add(list: &std::sync::Mutex<Vec<String>>, msg: String) {
        let mut g = match list.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if !g.contains(&msg) {
            g.push(msg);
        }
    }
    /// Adds a warning (once).
    pub(crate) fn warn(&self, msg: String) {
        Self::add(&self.warnings, msg)
    }
    /// Adds an info (once).
    pub(crate) fn info(&self, msg: String) {
        Self::add(&self.infos, msg)
    }
    /// The collected (warnings, infos).
    pub(crate) fn take(&self) -> (Vec<String>, Vec<String>) {
        let take = |l: &std::sync::Mutex<Vec<String>>| match l.lock() {
            Ok(mut g) => std::mem::take(&mut *g),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        };
        (take(&self.warnings), take(&self.infos))
    }
}
