// What a client lent is a view on the server's side, not a `&[u8]`.
fn bytes<'a>(ctx: &'a courier::shm::ReplyContext<u64, ()>) -> &'a [u8] {
    ctx.lent().unwrap()
}

fn main() {}
