// Arguments are moved to the server; a reference is only for lent bytes.
#[courier::service]
trait Kv {
    fn get(&self, key: &u64) -> u64;
}

fn main() {}
