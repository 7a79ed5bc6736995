// A #[deferred] method answers through a `Reply<T, E>` it takes last.
#[courier::service]
trait Slow {
    #[deferred]
    fn later(&self, x: u64) -> u64;
}

fn main() {}
