-- +goose Up
-- jetcqrs_expect_rows fails the transaction when a guarded statement (an
-- optimistic-concurrency UPDATE, say) touched another number of rows than it
-- had to. The check runs in the server, so a command can send its writes and
-- its COMMIT in one round trip: the COMMIT of a transaction whose guard failed
-- is a ROLLBACK. A serialization failure is what a retry can cure.
-- +goose StatementBegin
CREATE FUNCTION jetcqrs_expect_rows(affected bigint, expected bigint, statement text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF affected <> expected THEN
        RAISE EXCEPTION 'concurrent change: % affected % rows, want %', statement, affected, expected
            USING ERRCODE = 'serialization_failure';
    END IF;
END
$$;
-- +goose StatementEnd

-- +goose Down
DROP FUNCTION jetcqrs_expect_rows(bigint, bigint, text);
