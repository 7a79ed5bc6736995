// Lent bytes are the caller's only until the method returns: a deferred method cannot lend.
use courier::service::Reply;

#[courier::service]
trait Slow {
    #[deferred]
    fn later(&self, #[lend] data: &[u8], reply: Reply<u64>);
}

fn main() {}
