use super::*;

#[tokio::test]
async fn file_keeps_what_succeeded_and_not_what_is_leased() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metadata.json");
    let s = EmbeddedStore::open(&path).unwrap();
    let lease = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    let r1 = s.txn(Txn::new().put("/a", vec![0u8, 255]).put_leased("/eph", "x", lease)).await.unwrap();
    s.txn(Txn::new().put("/b", "2")).await.unwrap();
    s.txn(Txn::new().delete("/b")).await.unwrap();
    assert_eq!(s.persistent_len(), 1);
    drop(s);
    let again = EmbeddedStore::open(&path).unwrap();
    let a = again.get("/a").await.unwrap().unwrap();
    assert_eq!((a.value, a.create_revision, a.mod_revision), (vec![0, 255], r1.revision, r1.revision));
    assert!(again.get("/eph").await.unwrap().is_none(), "leased keys die with the process");
    assert!(again.get("/b").await.unwrap().is_none());
    // Revisions continue past what was persisted: compare-and-swap stays sound.
    let next = again.txn(Txn::new().put("/c", "3")).await.unwrap();
    assert!(next.revision > r1.revision + 2);
}

#[tokio::test]
async fn a_write_that_cannot_be_persisted_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gone").join("metadata.json");
    let s = EmbeddedStore::open(&path).unwrap();
    let err = s.txn(Txn::new().put("/a", "1")).await.unwrap_err();
    assert!(matches!(err, StoreError::Storage { .. }), "{err}");
    assert!(s.get("/a").await.unwrap().is_none());
    // Leased keys need no file.
    let lease = s.grant_lease(Duration::from_secs(60)).await.unwrap();
    assert!(s.txn(Txn::new().put_leased("/e", "1", lease)).await.unwrap().succeeded);
}

#[test]
fn a_corrupt_file_is_an_error_not_an_empty_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metadata.json");
    std::fs::write(&path, b"{not json").unwrap();
    assert!(matches!(EmbeddedStore::open(&path), Err(StoreError::Storage { .. })));
    std::fs::write(
        &path,
        br#"{"revision":3,"keys":[{"key":"/a","value_hex":"zz","create_revision":1,"mod_revision":1}]}"#,
    )
    .unwrap();
    assert!(matches!(EmbeddedStore::open(&path), Err(StoreError::Storage { .. })));
}

#[tokio::test]
async fn a_watch_older_than_the_history_is_compacted() {
    let s = EmbeddedStore::in_memory();
    for i in 0..(HISTORY + 10) {
        s.txn(Txn::new().put("/k", i.to_string())).await.unwrap();
    }
    assert!(matches!(s.watch("/", 1).await, Err(StoreError::Compacted { .. })));
    let (_, rev) = s.list("/").await.unwrap();
    let mut rx = s.watch("/", rev - 2).await.unwrap();
    assert_eq!(rx.recv().await.unwrap().unwrap().len(), 3);
}
