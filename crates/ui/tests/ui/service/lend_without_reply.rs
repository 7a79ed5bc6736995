// A one-way method cannot lend: the caller must wait until the server is done with the bytes.
#[courier::service]
trait Sink {
    fn push(&self, #[lend] data: &[u8]);
}

fn main() {}
