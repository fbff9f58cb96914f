//! Progress of long work (comparisons, copies, drains), so the CLI can draw a bar without the
//! library printing.

pub trait Progress {
    fn start(&mut self, label: &str, total: u64);
    fn advance(&mut self, n: u64);
    fn finish(&mut self);
}

pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&mut self, _: &str, _: u64) {}
    fn advance(&mut self, _: u64) {}
    fn finish(&mut self) {}
}
