%% Test driver for a real BEAM peer: reads requests as {packet,4} frames from the file
%% descriptors named by `-pybroadway_fds In Out` (stdout stays free for the node's own
%% output), evaluates each as Erlang expressions (bindings persist) and answers there.
%%   request  = Op:8 ExprText      Op = $e: reply the value as an external term
%%                                 Op = $r: the value is a binary, reply it raw
%%   reply    = 0 Payload | 1 ErrorText
%% The node halts when the request pipe closes, so a test that dies leaves no node behind.
-module(pybroadway_peer).
-export([main/0]).

main() ->
    {ok, [[In, Out]]} = init:get_argument(pybroadway_fds),
    Port = open_port({fd, list_to_integer(In), list_to_integer(Out)},
                     [binary, {packet, 4}, eof]),
    loop(Port, erl_eval:new_bindings()).

loop(Port, Bindings) ->
    receive
        {Port, {data, <<Op, Text/binary>>}} ->
            {Reply, Bindings2} = run(Op, Text, Bindings),
            port_command(Port, Reply),
            loop(Port, Bindings2);
        {Port, eof} ->
            erlang:halt(0)
    end.

run(Op, Text, Bindings) ->
    try
        {ok, Tokens, _} = erl_scan:string(with_dot(unicode:characters_to_list(Text))),
        {ok, Exprs} = erl_parse:parse_exprs(Tokens),
        {value, Value, Bindings2} = erl_eval:exprs(Exprs, Bindings),
        case Op of
            $e -> {[0 | term_to_binary(Value)], Bindings2};
            $r -> {[0 | Value], Bindings2}
        end
    catch
        Class:Reason:Stack ->
            Msg = io_lib:format("~p:~p~n~p", [Class, Reason, Stack]),
            {[1 | unicode:characters_to_binary(Msg)], Bindings}
    end.

%% The expressions may come with or without their final full stop.
with_dot(Text) ->
    case lists:reverse(string:trim(Text, trailing)) of
        [$. | _] -> Text;
        _ -> Text ++ "\n."
    end.
