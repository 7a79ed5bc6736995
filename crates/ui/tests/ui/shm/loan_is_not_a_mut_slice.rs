// A loan is a mutable view of a block the peer can map, not a `&mut [u8]`.
fn bytes<'a>(l: &'a mut courier::shm::ShmLoan<'_>) -> &'a mut [u8] {
    l
}

fn main() {}
