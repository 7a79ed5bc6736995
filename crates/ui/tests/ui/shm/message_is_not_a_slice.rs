// A received channel message is a view of the peer's block, not a `&[u8]`.
fn bytes<'a>(m: &'a courier::shm::ShmMessage<'_>) -> &'a [u8] {
    m
}

fn main() {}
