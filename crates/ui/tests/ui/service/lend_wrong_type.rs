// #[lend] lends bytes: `&[u8]`.
#[courier::service]
trait Text {
    fn count(&self, #[lend] text: &str) -> u64;
}

fn main() {}
